"""Proof-of-ownership benchmark: signing per address and bundle verification, each
against the raw primitive it is built on, all measured in the same run.

    python scripts/bench_proofs.py [--quick]

``run(quick)`` returns named figures (rates per second, seconds) and ratios, which are
Tandem time over floor time as in ``scripts/bench`` (lower is better, 1.0 = no overhead):

- proof signing per address (BIP-322 simple, EIP-191, Solana off-chain v0: the message
  rendered and signed in the chain's format) vs raw coincurve ECDSA / PyNaCl Ed25519
  signing of a 32-byte digest or the same message;
- verification of a bundle of 100,000 proofs (10,000 with ``quick``), a third per chain,
  through ``tandem.core.proofs.verify_bundle`` with all cores, vs the raw verify rate of
  the primitives (one core, mixed in the same proportions) and vs eth-account's
  ``Account.recover_message`` (what an auditor would script by hand for Ethereum).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import coincurve
import nacl.signing

from tandem.cli.parallel import chunk_runner, usable_cores
from tandem.core import proofs as core
from tandem.core.audit import sign_checkpoint
from tandem.core.chains import get_chain, secp256k1

T0 = 1_790_000_000
NONCE = "bench-" + "0" * 26
ENTITY = "Example Fund SICAV"
CHAINS = (("bitcoin", "mainnet"), ("ethereum", "mainnet"), ("solana", "mainnet"))
DATE = core.utc_date(T0 + 60)


def _rate(count: int, fn: Callable[[], object]) -> float:
    """Calls per second of ``fn`` over ``count`` calls (best of two rounds)."""
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        for _ in range(count):
            fn()
        best = min(best, time.perf_counter() - start)
    return count / best


def _key(chain: str) -> tuple[bytes, bytes]:
    while True:
        private = os.urandom(32)
        if chain == "solana":
            return private, bytes(nacl.signing.SigningKey(private).verify_key)
        if secp256k1.is_valid_private_key(private):
            return private, secp256k1.public_key(private)


def _proof(
    chain: str, network: str, key: tuple[bytes, bytes], segregation: str, address: str | None = None
) -> dict[str, Any]:
    """One signed proof; ``address`` as a key set stores it (derived here when not given)."""
    private, public = key
    address = address or get_chain(chain).address(public, network)
    return core.sign_proof(
        chain=chain,
        network=network,
        address=address,
        public_key=public,
        segregation=segregation,
        private_key=private,
        entity=ENTITY,
        nonce=NONCE,
        date=DATE,
    )


def _make_chunk(start: int, count: int) -> list[dict[str, Any]]:
    out = []
    for i in range(start, start + count):
        chain, network = CHAINS[i % 3]
        out.append(_proof(chain, network, _key(chain), "own" if i % 2 else "client-omnibus"))
    return out


def synthetic_bundle(count: int, *, jobs: int) -> dict[str, Any]:
    chunk = 1000
    context = multiprocessing.get_context("fork")
    proofs: list[dict[str, Any]] = []
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = [pool.submit(_make_chunk, s, min(chunk, count - s)) for s in range(0, count, chunk)]
        for future in futures:
            proofs.extend(future.result())
    challenge = core.make_challenge(
        challenge_id="pc_bench",
        deployment="dep_bench",
        entity=ENTITY,
        nonce=NONCE,
        statement="benchmark",
        scope={"kind": "all"},
        keysets=["ks_bench"],
        issuer="mem_bench",
        issuer_role="auditor",
        created_at=T0,
        expires_at=T0 + 3600,
    )
    checkpoint = sign_checkpoint(
        bytes(32), deployment="dep_bench", tree_size=1, root="00" * 32, last_hash="00" * 32, time=T0 + 60
    )
    return core.build_bundle(challenge=challenge, signed_at=T0 + 60, checkpoint=checkpoint, proofs=proofs)


def _signing(n: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    digest = hashlib.sha256(b"bench").digest()
    secp_key = coincurve.PrivateKey(_key("bitcoin")[0])
    figures["raw_coincurve_sign_per_s"] = _rate(n, lambda: secp_key.sign_recoverable(digest, hasher=None))
    ed_key = nacl.signing.SigningKey(os.urandom(32))
    message = core.render_message(
        entity=ENTITY, address="x" * 44, segregation="own", nonce=NONCE, date=DATE
    ).encode()
    figures["raw_pynacl_sign_per_s"] = _rate(n, lambda: ed_key.sign(message))
    for chain, network in CHAINS:
        key = _key(chain)
        address = get_chain(chain).address(key[1], network)
        # Same key and its stored address every call: the signing cost per address, not
        # key generation or address derivation (a key set holds its addresses).
        figures[f"proof_sign_{chain}_per_s"] = _rate(
            n, lambda c=chain, w=network, k=key, a=address: _proof(c, w, k, "own", a)
        )
    # Ratios are Tandem time over floor time (lower is better; 1.0 = no overhead).
    figures["proof_sign_bitcoin_ratio_to_coincurve_sign"] = (
        figures["raw_coincurve_sign_per_s"] / figures["proof_sign_bitcoin_per_s"]
    )
    figures["proof_sign_ethereum_ratio_to_coincurve_sign"] = (
        figures["raw_coincurve_sign_per_s"] / figures["proof_sign_ethereum_per_s"]
    )
    figures["proof_sign_solana_ratio_to_pynacl_sign"] = (
        figures["raw_pynacl_sign_per_s"] / figures["proof_sign_solana_per_s"]
    )
    return figures


def _raw_verify(n: int) -> dict[str, float | None]:
    figures: dict[str, float | None] = {}
    digest = hashlib.sha256(b"bench").digest()
    secp_key = coincurve.PrivateKey(_key("bitcoin")[0])
    der = secp_key.sign(digest, hasher=None)
    public = secp_key.public_key
    figures["raw_coincurve_verify_per_s"] = _rate(n, lambda: public.verify(der, digest, hasher=None))
    recoverable = secp_key.sign_recoverable(digest, hasher=None)
    figures["raw_coincurve_recover_per_s"] = _rate(
        n, lambda: coincurve.PublicKey.from_signature_and_message(recoverable, digest, hasher=None)
    )
    ed_key = nacl.signing.SigningKey(os.urandom(32))
    signed = ed_key.sign(b"x" * 200)
    verify_key = ed_key.verify_key
    figures["raw_pynacl_verify_per_s"] = _rate(n, lambda: verify_key.verify(signed))
    # Bitcoin verifies (ECDSA), Ethereum recovers, Solana verifies Ed25519: a third each.
    per_proof = (
        1 / figures["raw_coincurve_verify_per_s"]
        + 1 / figures["raw_coincurve_recover_per_s"]
        + 1 / figures["raw_pynacl_verify_per_s"]
    ) / 3
    figures["raw_mixed_verify_per_s"] = 1 / per_proof
    try:
        from eth_account import Account
        from eth_account.messages import encode_defunct
    except ImportError:  # a test-only dependency
        figures["eth_account_recover_message_per_s"] = None
        return figures
    proof = _proof("ethereum", "mainnet", _key("ethereum"), "own")
    count = max(200, n // 10)
    figures["eth_account_recover_message_per_s"] = _rate(
        count,
        lambda: Account.recover_message(encode_defunct(text=proof["message"]), signature=proof["signature"]),
    )
    return figures


def run(quick: bool) -> dict[str, Any]:
    """Named figures and ratios, all measured in this call."""
    cores = usable_cores()
    proofs = 10_000 if quick else 100_000
    out: dict[str, Any] = {"quick": quick, "cores": cores, "bundle_proofs": proofs}
    out.update(_signing(500 if quick else 2000))
    out.update(_raw_verify(5000 if quick else 20000))

    start = time.perf_counter()
    bundle = synthetic_bundle(proofs, jobs=cores)
    out["bundle_build_seconds"] = time.perf_counter() - start
    data = core.bundle_bytes(bundle)
    out["bundle_bytes"] = len(data)
    del bundle

    start = time.perf_counter()
    parsed = core.parse_bundle(data)
    out["bundle_parse_seconds"] = time.perf_counter() - start
    done: list[int] = []
    start = time.perf_counter()
    report = core.verify_bundle(
        parsed,
        nonce=NONCE,
        run_chunks=chunk_runner(cores, proofs),
        progress=lambda d, _t: done.append(d),
    )
    seconds = time.perf_counter() - start
    if not report.ok or report.verified != proofs:
        raise RuntimeError(f"benchmark bundle did not verify: {report.failures[:3]}")
    out["bundle_verify_seconds"] = seconds
    out["bundle_verify_per_s"] = proofs / seconds
    out["bundle_verify_end_to_end_per_s"] = proofs / (seconds + out["bundle_parse_seconds"])
    # Time ratios (lower is better): the bundle is verified on every core, the raw
    # primitives and eth-account on one, so the per-core figure compares like with like.
    out["bundle_verify_ratio_to_raw_verify"] = out["raw_mixed_verify_per_s"] / out["bundle_verify_per_s"]
    out["bundle_verify_per_core_ratio_to_raw_verify"] = out["bundle_verify_ratio_to_raw_verify"] * cores
    eth = out["eth_account_recover_message_per_s"]
    out["bundle_verify_ratio_to_eth_account_recover"] = eth / out["bundle_verify_per_s"] if eth else None
    out["bundle_verify_per_core_ratio_to_eth_account_recover"] = (
        eth * cores / out["bundle_verify_per_s"] if eth else None
    )
    return {k: _round(v) for k, v in out.items()}


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value) if value >= 100 else round(value, 2)
    return value


def main() -> None:
    print(json.dumps(run("--quick" in sys.argv[1:]), indent=2))


if __name__ == "__main__":
    main()
