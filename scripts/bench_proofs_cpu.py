"""Proof signing and verification in CPU time (``time.process_time``), for a machine
shared with other jobs, where the wall-clock figures of ``bench_proofs`` swing with the
load. Best of three rounds; one process, so every figure is per core.

    PYTHONPATH=src:scripts python scripts/bench_proofs_cpu.py [--count N]

Run it from two checkouts alternately to compare code (before/after) on the same load.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from collections.abc import Callable

import bench_proofs as bp
import coincurve
import nacl.signing

from tandem.core import proofs as core
from tandem.core.chains import get_chain


def cpu_rate(count: int, fn: Callable[[], object], rounds: int = 3) -> float:
    """Calls per CPU second of ``fn`` (best of ``rounds``)."""
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(count):
            fn()
        best = min(best, time.process_time() - start)
    return count / best


def run(count: int) -> dict[str, float]:
    out: dict[str, float] = {}
    digest = hashlib.sha256(b"bench").digest()
    secp = coincurve.PrivateKey(bp._key("bitcoin")[0])
    out["raw_coincurve_sign_per_cpu_s"] = cpu_rate(count, lambda: secp.sign_recoverable(digest, hasher=None))
    ed = nacl.signing.SigningKey(os.urandom(32))
    out["raw_pynacl_sign_per_cpu_s"] = cpu_rate(count, lambda: ed.sign(b"x" * 200))
    for chain, network in bp.CHAINS:
        key = bp._key(chain)
        address = get_chain(chain).address(key[1], network)
        out[f"proof_sign_{chain}_per_cpu_s"] = cpu_rate(
            count, lambda c=chain, w=network, k=key, a=address: bp._proof(c, w, k, "own", a)
        )
        floor = out["raw_pynacl_sign_per_cpu_s" if chain == "solana" else "raw_coincurve_sign_per_cpu_s"]
        out[f"proof_sign_{chain}_ratio"] = floor / out[f"proof_sign_{chain}_per_cpu_s"]
    # A third per chain, as in the bundle; every address a fresh one.
    proofs = [bp._proof(*bp.CHAINS[i % 3], bp._key(bp.CHAINS[i % 3][0]), "own") for i in range(300)]
    rounds = max(1, count // len(proofs))
    per_chunk = cpu_rate(rounds, lambda: core._check_chunk(bp.ENTITY, bp.NONCE, bp.DATE, proofs))
    out["proof_verify_mixed_per_cpu_s"] = per_chunk * len(proofs)
    return {k: round(v, 2) if v < 100 else round(v) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=3000)
    print(json.dumps(run(parser.parse_args().count), indent=2))


if __name__ == "__main__":
    main()
