"""The one interface every chain implements (the registry is ``chains.registry``).

A chain turns a public key into an address, validates addresses a person types, and
signs/verifies proof-of-control messages in that chain's own standard format so that
standard wallets and libraries can check them. Its withdrawal transactions are
``chain.tx``, a :class:`ChainTx`: build one from an intent, decode it for review,
compare it with the intent, sign it, check a signature, and read its worst-case fee.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from tandem.errors import InputError

if TYPE_CHECKING:
    from tandem.core.policy import Fee

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


@dataclass(frozen=True)
class BuiltTx:
    """An unsigned withdrawal transaction, with the prevouts its signatures commit to
    (Bitcoin), its worst-case fee and its change."""

    unsigned: bytes
    prevouts: tuple[dict[str, Any], ...]
    fee: int
    change: int


class TxIntent(Protocol):
    """What every chain's transactions read of a withdrawal intent
    (:class:`tandem.core.withdrawal.intent.Intent`). Each chain module names what else it
    reads (``BitcoinIntent``, ``EthereumIntent``, ``SolanaIntent``)."""

    @property
    def from_address(self) -> str: ...

    @property
    def network(self) -> str: ...

    @property
    def asset(self) -> str: ...

    @property
    def amount(self) -> int: ...

    @property
    def destination(self) -> str: ...

    @property
    def token(self) -> str | None: ...


class ChainTx(Protocol):
    """A chain's withdrawal transactions, as the withdrawal core uses them. ``intent`` is
    a :class:`TxIntent` with the chain's own parameters, which only its module names."""

    def own_address(self, public_key: bytes, network: str) -> str:
        """The address a wallet key spends from."""
        ...

    def token(self, asset: str) -> str | None:
        """The token (contract or mint) ``asset`` names; None for the native coin."""
        ...

    def token_key(self, token: str) -> str:
        """The spelling two names of one token compare equal in."""
        ...

    def build(self, intent: Any, public_key: bytes) -> BuiltTx: ...

    def decode(self, intent: Any, unsigned: bytes, prevouts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """The decoded view, from the bytes alone (and the intent's from/token to label them)."""
        ...

    def mismatches(self, intent: Any, view: Mapping[str, Any]) -> list[str]:
        """Every way the decoded view differs from the intent, in words."""
        ...

    def fee(self, intent: Any, view: Mapping[str, Any]) -> Fee:
        """The worst-case fee of a checked transaction, from its decoded view."""
        ...

    def sign(
        self, unsigned: bytes, prevouts: Sequence[Mapping[str, Any]], private_key: bytes
    ) -> tuple[bytes, str]: ...

    def check_signed(
        self, signed: bytes, unsigned: bytes, prevouts: Sequence[Mapping[str, Any]], from_address: str
    ) -> str:
        """Raise unless ``signed`` is ``unsigned`` validly signed by ``from_address``; its txid."""
        ...


class Chain(Protocol):
    name: ClassVar[str]
    native_asset: ClassVar[str]  # the asset fees are paid in: BTC, ETH, SOL
    curve: ClassVar[Curve]
    networks: ClassVar[frozenset[str]]

    @property
    def tx(self) -> ChainTx:
        """Its withdrawal transactions."""
        ...

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
