"""BIP-137 on segwit addresses, as auditors' own wallets sign: Electrum (and Coinomi,
Mycelium, Samourai) under the compressed-P2PKH header 31-34 on P2WPKH and P2SH-P2WPKH,
Trezor under BIP-137's own 35-38 (P2SH-P2WPKH) and 39-42 (P2WPKH). Published vectors,
cross-checked by recovering the key with python-bitcoinlib and deriving the address
with embit; then through a whole bundle and `tandem verify proofs`."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from bitcoin.core.key import CPubKey
from bitcoin.signmessage import BitcoinMessage
from embit import ec, script
from embit.networks import NETWORKS
from typer.testing import CliRunner

from tandem.core import proofs as core
from tandem.core.chains import bitcoin as btc
from tandem.core.chains import secp256k1
from tandem.core.chains.base import MessageProof
from tandem.errors import CannotVerifyError, VerificationError

VECTORS: list[dict[str, str]] = json.loads(
    (Path(__file__).parents[2] / "vectors" / "bitcoin_bip137_segwit.json").read_text(encoding="utf-8")
)["vectors"]
CHAIN = btc.BITCOIN
KEY = bytes.fromhex("0c28fca386c7a227600b2fe50b7cae11ec86d3bf1fbe471be89827e19d72aa1d")
PUB = secp256k1.public_key(KEY)


def header(signature: str) -> int:
    return base64.b64decode(signature)[0]


def with_header(signature: str, base: int) -> str:
    raw = base64.b64decode(signature)
    return base64.b64encode(bytes([base + (raw[0] - 27) % 4]) + raw[1:]).decode()


def p2sh_p2wpkh_address(public_key: bytes, network: str) -> str:
    net = NETWORKS["main" if network == "mainnet" else "test"]
    return str(script.p2sh(script.p2wpkh(ec.PublicKey.parse(public_key))).address(net))


def sign_raw(message: str, base: int, key: bytes = KEY) -> str:
    r, s, recovery_id = secp256k1.sign_digest_recoverable(key, btc.bip137_message_hash(message))
    raw = bytes([base + recovery_id]) + r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return base64.b64encode(raw).decode()


def test_the_vectors_cover_every_case() -> None:
    cases = {(v["kind"], (header(v["signature"]) - 27) // 4 * 4 + 27) for v in VECTORS}
    assert cases == {("p2wpkh", 31), ("p2wpkh", 39), ("p2sh-p2wpkh", 31), ("p2sh-p2wpkh", 35)}


def vector_id(v: dict[str, str]) -> str:
    return f"{v['wallet']}-{v['kind']}-{header(v['signature'])}"


@pytest.mark.parametrize("vector", VECTORS, ids=vector_id)
def test_wallet_vectors_verify(vector: dict[str, str]) -> None:
    proof = MessageProof("bip137", vector["signature"])
    CHAIN.verify_message(vector["address"], vector["message"], proof, vector["network"])
    with pytest.raises(VerificationError, match="not made by the key"):
        CHAIN.verify_message(vector["address"], vector["message"] + ".", proof, vector["network"])


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: f"{v['wallet']}-{v['kind']}")
def test_vectors_cross_checked_with_bitcoinlib_and_embit(vector: dict[str, str]) -> None:
    """An independent recovery (python-bitcoinlib, header normalised to its 31-34
    form) and an independent address derivation (embit) agree with the address."""
    raw = base64.b64decode(with_header(vector["signature"], 31))
    pub = CPubKey.recover_compact(BitcoinMessage(vector["message"]).GetHash(), raw)
    assert pub is not None
    assert pub.is_compressed
    key = ec.PublicKey.parse(bytes(pub))
    net = NETWORKS["main" if vector["network"] == "mainnet" else "test"]
    derived = {
        "p2wpkh": script.p2wpkh(key).address(net),
        "p2sh-p2wpkh": script.p2sh(script.p2wpkh(key)).address(net),
    }[vector["kind"]]
    assert derived == vector["address"]
    # The public key given beside a proof is checked against the address too.
    CHAIN.verify_message(
        vector["address"], vector["message"], MessageProof("bip137", vector["signature"]), vector["network"],
        public_key=bytes(pub),
    )


def test_headers_that_contradict_the_address_are_refused() -> None:
    native = next(v for v in VECTORS if v["kind"] == "p2wpkh")
    nested = next(v for v in VECTORS if v["kind"] == "p2sh-p2wpkh")
    # 35-38 is P2SH-P2WPKH only; 39-42 is P2WPKH only; 27-30 (uncompressed) never segwit.
    for vector, base, named in ((native, 35, "p2sh"), (nested, 39, "p2wpkh"), (native, 27, "p2pkh"),
                                (nested, 27, "p2pkh")):
        bad = MessageProof("bip137", with_header(vector["signature"], base))
        with pytest.raises(VerificationError, match=f"is for {named}, address is"):
            CHAIN.verify_message(vector["address"], vector["message"], bad, vector["network"])


def test_p2sh_that_is_not_the_keys_p2wpkh_is_refused() -> None:
    message = "m"
    signature = sign_raw(message, 35)
    ours = p2sh_p2wpkh_address(PUB, "mainnet")
    CHAIN.verify_message(ours, message, MessageProof("bip137", signature), "mainnet")
    # The P2SH of some other script (here: the key's P2PKH script) is not this key's.
    other = btc.base58check_encode(b"\x05" + btc.hash160(btc.p2pkh_script(btc.hash160(PUB))))
    with pytest.raises(VerificationError, match="not made by the key"):
        CHAIN.verify_message(other, message, MessageProof("bip137", signature), "mainnet")
    with pytest.raises(VerificationError, match="public key given"):
        CHAIN.verify_message(
            ours, message, MessageProof("bip137", signature), "mainnet",
            public_key=secp256k1.public_key(bytes(31) + b"\x07"),
        )


def test_bip322_is_still_not_claimed_for_p2sh() -> None:
    ours = p2sh_p2wpkh_address(PUB, "mainnet")
    good = CHAIN.sign_message(KEY, btc.p2wpkh_address(PUB, "mainnet"), "m", "mainnet")
    with pytest.raises(CannotVerifyError, match="p2sh"):
        CHAIN.verify_message(ours, "m", good, "mainnet")


# --- through a bundle and the CLI ------------------------------------------------------

NONCE = "4f1c2a9e0b7d4e3f8a6c5b2d1e0f9a8b"
ENTITY = "Example Fund SICAV"


def electrum_style_bundle() -> dict[str, Any]:
    """Two entries an Electrum wallet would produce: a P2WPKH and a P2SH-P2WPKH address,
    each signed under header 31-34, and a Trezor-style 35-38 entry."""
    from tandem.core.audit import sign_checkpoint

    entries = []
    other = bytes(31) + b"\x2a"
    for key, address, base in (
        (KEY, btc.p2wpkh_address(PUB, "testnet"), 31),
        (KEY, p2sh_p2wpkh_address(PUB, "testnet"), 31),
        (other, p2sh_p2wpkh_address(secp256k1.public_key(other), "testnet"), 35),
    ):
        message = core.render_message(
            entity=ENTITY, address=address, segregation="own", nonce=NONCE, date="2026-09-21"
        )
        entries.append(
            {
                "chain": "bitcoin",
                "network": "testnet",
                "address": address,
                "public_key": secp256k1.public_key(key).hex(),
                "segregation": "own",
                "format": "bip137",
                "message": message,
                "signature": sign_raw(message, base, key),
            }
        )
    challenge = core.make_challenge(
        challenge_id="pc_test", deployment="dep_test", entity=ENTITY, nonce=NONCE,
        statement="Q3 2026 statement of position", scope={"kind": "all"}, keysets=["ks_a"],
        issuer="mem_olga", issuer_role="auditor", created_at=1_790_000_000, expires_at=1_790_086_400,
    )
    checkpoint = sign_checkpoint(
        bytes(range(32)), deployment="dep_test", tree_size=5, root="00" * 32, last_hash="11" * 32,
        time=1_790_000_060,
    )
    return core.build_bundle(
        challenge=challenge, signed_at=1_790_000_060, checkpoint=checkpoint, proofs=entries
    )


def test_verify_proofs_accepts_segwit_bip137(tmp_path: Path) -> None:
    from tandem.cli.main import app

    bundle = electrum_style_bundle()
    assert core.verify_bundle(bundle, nonce=NONCE).ok
    path = tmp_path / "proofs.json"
    path.write_bytes(core.bundle_bytes(bundle))
    result = CliRunner().invoke(app, ["verify", "proofs", str(path), "--challenge", NONCE])
    assert result.exit_code == 0, result.output
    assert "every proof verifies" in result.output

    # One tampered message and the same command fails, naming the address.
    bundle["proofs"][1]["message"] += " "
    path.write_bytes(core.bundle_bytes(bundle))
    result = CliRunner().invoke(app, ["verify", "proofs", str(path), "--challenge", NONCE])
    assert result.exit_code == 1
    assert bundle["proofs"][1]["address"] in result.output
