"""The one interface every chain implements (the registry is ``chains.registry``).

A chain turns a public key into an address, validates addresses a person types, and
signs/verifies proof-of-control messages in that chain's own standard format so that
standard wallets and libraries can check them. Transaction building lives in the chain
modules too, but only where Tandem releases withdrawals (Bitcoin, Ethereum).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, Protocol

from tandem.errors import InputError

Curve = Literal["secp256k1", "ed25519"]


@dataclass(frozen=True)
class MessageProof:
    """A signed message as its standard encodes it.

    ``format`` is one of ``bip322-simple``, ``bip137``, ``eip191``, ``solana-offchain-v0``.
    ``signature`` is base64 (Bitcoin), 0x-hex (Ethereum) or base58 (Solana).
    ``payload_hex`` is, for ``solana-offchain-v0``, the exact serialised message signed.
    """

    format: str
    signature: str
    payload_hex: str | None = None


class Chain(Protocol):
    name: ClassVar[str]
    native_asset: ClassVar[str]  # the asset fees are paid in: BTC, ETH, SOL
    curve: ClassVar[Curve]
    networks: ClassVar[frozenset[str]]

    def address(self, public_key: bytes, network: str) -> str:
        """The standard address of ``public_key`` (P2WPKH, EIP-55, base58) on ``network``."""
        ...

    def validate_address(self, address: str, network: str) -> str:
        """Return the normalised address or raise :class:`InvalidAddressError`."""
        ...

    def sign_message(
        self, private_key: bytes, address: str, message: str, network: str, *, public_key: bytes | None = None
    ) -> MessageProof:
        """Sign ``message`` (UTF-8 text) as a proof of control of ``address``. ``public_key``,
        where the caller holds it (a key set does), spares deriving it again; a key that
        does not belong to ``private_key`` makes the signature fail its own check."""
        ...

    def verify_message(
        self,
        address: str,
        message: str,
        proof: MessageProof,
        network: str,
        public_key: bytes | None = None,
    ) -> None:
        """Raise :class:`VerificationError` if the proof is wrong, or
        :class:`CannotVerifyError` if its format is not one this chain checks."""
        ...


def check_network(chain: Chain, network: str) -> None:
    if network not in chain.networks:
        raise InputError(
            f"unknown {chain.name} network {network!r}; known: {', '.join(sorted(chain.networks))}"
        )
