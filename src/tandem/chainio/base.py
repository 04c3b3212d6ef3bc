"""The chain backend interfaces, their typed results, and the registry that picks one.

Like ``core.chains`` (and securesystemslib's signers): one interface, one
implementation per backend, chosen by name from a registry, never by ``if chain ==``.
:class:`ChainBackend` is what every backend answers; :class:`BitcoinBackend`,
:class:`EthereumBackend` and :class:`SolanaBackend` add what only that chain has.

Results are frozen dataclasses whose amounts are ``int`` base units (satoshi, wei,
lamports, token base units); no float is ever produced. Every result was checked
against what it claims (a UTXO against its previous transaction, a broadcast's answer
against the id computed locally), so a lying node is refused here, not believed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from tandem.core.chains.bitcoin import Prevout

TxState = Literal["unknown", "pending", "confirmed", "failed"]


@dataclass(frozen=True)
class Balance:
    chain: str
    network: str
    address: str
    amount: int  # base units of the native asset
    block_height: int | None = None  # the height the balance was read at, where known


@dataclass(frozen=True)
class TokenBalance:
    chain: str
    network: str
    token: str  # ERC-20 contract or SPL mint
    owner: str
    amount: int  # token base units
    block_height: int | None = None
    account: str | None = None  # Solana: the token account holding it
    decimals: int | None = None  # as the node reports it (display only)


@dataclass(frozen=True)
class TxStatus:
    txid: str
    state: TxState
    block_height: int | None = None  # Solana: the slot
    confirmations: int = 0
    fee: int | None = None  # base units, where the node reports it
    # Solana: lamports the fee payer's balance fell by (the fee, what it sent, and the rent
    # of any account it created), from the transaction's pre- and post-balances.
    payer_spent: int | None = None


@dataclass(frozen=True)
class Utxo:
    """An unspent output with its previous transaction, checked against each other.

    ``raw_tx`` hashes to ``txid``; its output ``vout`` pays ``amount`` to
    ``script_pubkey``; ``script_pubkey`` is ``address``'s script. The amount therefore
    comes from the previous transaction, not from what a node says about it.
    """

    txid: str
    vout: int
    amount: int  # sats
    address: str
    script_pubkey: bytes
    raw_tx: bytes = field(repr=False)
    block_height: int | None = None  # None while unconfirmed (or unknown offline)

    @property
    def outpoint(self) -> str:
        return f"{self.txid}:{self.vout}"

    def prevout(self) -> Prevout:
        from tandem.core.chains.bitcoin import Prevout

        return Prevout(self.txid, self.vout, self.amount, self.script_pubkey)


@dataclass(frozen=True)
class BitcoinFeeRate:
    sat_per_vb: int  # rounded up to a whole sat/vB, as core.chains.bitcoin expects
    target_blocks: int


@dataclass(frozen=True)
class EthereumFees:
    base_fee_per_gas: int  # of the next block
    max_priority_fee_per_gas: int
    max_fee_per_gas: int  # 2 x next base fee + priority: survives six full blocks
    block_height: int


@dataclass(frozen=True)
class TokenTransfer:
    token: str
    sender: str
    recipient: str
    amount: int
    tx_hash: str
    block_height: int
    log_index: int


@dataclass(frozen=True)
class EthereumTransaction:
    tx_hash: str
    sender: str
    to: str | None
    nonce: int
    value: int
    block_height: int | None


@dataclass(frozen=True)
class InternalTransfer:
    """Value a contract call moved inside a transaction (a trace, not a transaction):
    ``index`` is the trace's place in the transaction's trace list (0 is the top call)."""

    tx_hash: str
    to: str
    value: int
    index: int
    block_height: int


@dataclass(frozen=True)
class SignatureInfo:
    signature: str
    slot: int
    failed: bool
    confirmation_status: str | None
    block_time: int | None

    @property
    def finalized(self) -> bool:
        """Rooted by the cluster: it can no longer be rolled back."""
        return self.confirmation_status == "finalized"


@dataclass(frozen=True)
class Mint:
    """A token mint as the chain states it: its decimals and the program that owns it."""

    decimals: int
    program: str


@dataclass(frozen=True)
class Blockhash:
    blockhash: str
    last_valid_block_height: int
    slot: int


@dataclass(frozen=True)
class DurableNonce:
    """A System nonce account's stored value: what a durable transaction names as its
    blockhash, valid until the nonce is advanced (by the transaction that uses it)."""

    account: str
    authority: str
    nonce: str
    lamports_per_signature: int
    slot: int


@dataclass(frozen=True)
class SolanaTransfer:
    """Value one instruction (top-level or inner) of a successful transaction moved into
    ``recipient``: lamports (``asset`` ``"SOL"``) or token base units of mint ``asset``."""

    signature: str
    slot: int
    recipient: str  # the owner: the wallet address, not its token account
    asset: str
    amount: int
    index: int  # the instruction's place in execution order (inner ones after their parent)
    account: str | None = None  # the receiving token account
    block_time: int | None = None


@runtime_checkable
class ChainBackend(Protocol):
    """What every backend answers, whatever the chain."""

    chain: ClassVar[str]
    kind: ClassVar[str]
    network: str

    def tip_height(self) -> int:
        """Height (Bitcoin, Ethereum) or slot (Solana) of the node's best block."""
        ...

    def balance(self, address: str) -> Balance: ...

    def transaction_status(self, txid: str) -> TxStatus: ...

    def broadcast(self, raw: bytes) -> str:
        """Send a signed transaction; return its id, checked against the id computed here."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class BitcoinBackend(ChainBackend, Protocol):
    def utxos(self, address: str) -> tuple[Utxo, ...]: ...

    def raw_transaction(self, txid: str) -> bytes:
        """The serialised transaction, checked to hash to ``txid``."""
        ...

    def suggest_fee_rate(self, target_blocks: int = 6) -> BitcoinFeeRate: ...


@runtime_checkable
class EthereumBackend(ChainBackend, Protocol):
    def chain_id(self) -> int: ...

    def token_balance(self, token: str, owner: str) -> TokenBalance: ...

    def token_transfers(
        self, token: str, recipients: tuple[str, ...], *, from_block: int, to_block: int | None = None
    ) -> tuple[TokenTransfer, ...]: ...

    def nonce(self, address: str) -> int:
        """Next nonce of ``address``, counting its pending transactions."""
        ...

    def suggest_fees(self) -> EthereumFees: ...

    def transaction(self, tx_hash: str) -> EthereumTransaction | None: ...


@runtime_checkable
class SolanaBackend(ChainBackend, Protocol):
    def token_balances(self, owner: str, mint: str | None = None) -> tuple[TokenBalance, ...]: ...

    def signatures(
        self, address: str, *, limit: int = 100, before: str | None = None, until: str | None = None
    ) -> tuple[SignatureInfo, ...]: ...

    def latest_blockhash(self) -> Blockhash: ...

    def durable_nonce(self, account: str) -> DurableNonce: ...

    def mint(self, mint: str) -> Mint: ...

    def account_exists(self, address: str) -> bool: ...

    def fee_for_message(self, message: bytes) -> int | None: ...

    def recent_prioritization_fees(self, accounts: tuple[str, ...]) -> tuple[int, ...]: ...

    def token_account_balance(self, account: str) -> TokenBalance: ...

    def transfers_to(self, signature: str, recipients: tuple[str, ...]) -> tuple[SolanaTransfer, ...]: ...
