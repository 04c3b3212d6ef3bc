"""Tables. JSON documents are stored as canonical JSON text, so what is read back is
byte-for-byte what was hashed and signed. Request/response schemas live in ``api``."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


def _text() -> Column[str]:
    return Column(Text, nullable=False)


def _text_null() -> Column[str]:
    return Column(Text, nullable=True)


class Deployment(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=64)
    entity: str = Field(max_length=200)
    genesis_hash: str = Field(max_length=64)
    genesis_doc: str = Field(sa_column=_text())
    created_at: int


class Member(SQLModel, table=True):
    __table_args__ = (Index("ix_member_added_at_id", "added_at", "id"),)  # the list's page order
    id: str = Field(primary_key=True, max_length=64)
    deployment: str = Field(index=True, max_length=64)
    name: str = Field(max_length=64, unique=True)
    role: str = Field(max_length=16)
    sign_public: str = Field(max_length=64, unique=True)
    seal_public: str = Field(max_length=64, unique=True)
    card: str = Field(sa_column=_text())
    status: str = Field(default="active", max_length=16)
    added_at: int
    removed_at: int | None = None
    totp_sealed: str | None = Field(default=None, sa_column=_text_null())
    totp_last_step: int | None = None
    totp_failures: int = 0
    totp_last_failure_at: int | None = None
    totp_locked_until: int | None = None


class UsedNonce(SQLModel, table=True):
    nonce: str = Field(primary_key=True, max_length=32)
    actor: str = Field(max_length=64)
    used_at: int


class AuditRow(SQLModel, table=True):
    seq: int = Field(primary_key=True)
    hash: str = Field(max_length=64, unique=True)
    kind: str = Field(max_length=64, index=True)
    line: str = Field(sa_column=_text())


class AuditHead(SQLModel, table=True):
    id: int = Field(primary_key=True)
    size: int
    last_hash: str = Field(max_length=64)
    state: str = Field(sa_column=_text())


class CheckpointRow(SQLModel, table=True):
    tree_size: int = Field(primary_key=True)
    doc: str = Field(sa_column=_text())


class AuditNode(SQLModel, table=True):
    """The root of one perfect subtree of the audit Merkle tree, written by the append
    that completes it: ``height`` >= 1, covering the leaves [idx * 2**height,
    (idx + 1) * 2**height). Height 0 is ``AuditRow.hash``. Any root or proof is then at
    most about 2 log2(n) of these rows away, instead of every leaf."""

    height: int = Field(primary_key=True)
    idx: int = Field(primary_key=True)
    hash: str = Field(max_length=64)


class AuditMarker(SQLModel, table=True):
    """The signed "verified up to entry N, root R" marker start-up resumes from (one row)."""

    id: int = Field(primary_key=True)
    doc: str = Field(sa_column=_text())


class Proposal(SQLModel, table=True):
    __table_args__ = (Index("ix_proposal_created_at_id", "created_at", "id"),)  # the list's page order
    id: str = Field(primary_key=True, max_length=64)
    deployment: str = Field(max_length=64)
    kind: str = Field(max_length=32, index=True)
    body: str = Field(sa_column=_text())
    proposer: str = Field(max_length=64)
    status: str = Field(max_length=16, index=True)
    created_at: int
    expires_at: int
    approved_at: int | None = None
    effective_at: int | None = None
    envelope: str = Field(sa_column=_text())


class Approval(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("subject", "member", name="uq_approval_subject_member"),)
    id: int | None = Field(default=None, primary_key=True)
    subject: str = Field(max_length=80, index=True)
    member: str = Field(max_length=64)
    role: str = Field(max_length=16)
    envelope: str = Field(sa_column=_text())
    created_at: int


class Session(SQLModel, table=True):
    token_hash: str = Field(primary_key=True, max_length=64)
    member: str = Field(max_length=64)
    created_at: int
    expires_at: int
    # The member's signing key when the session was opened: a rekey ends the session.
    sign_public: str | None = Field(default=None, max_length=64)


class Idempotency(SQLModel, table=True):
    key: str = Field(primary_key=True, max_length=128)
    actor: str = Field(max_length=64)
    request_hash: str = Field(max_length=64)
    status_code: int
    response: str = Field(sa_column=_text())
    created_at: int


class Ceremony(SQLModel, table=True):
    __table_args__ = (Index("ix_ceremony_created_at_id", "created_at", "id"),)  # the list's page order
    id: str = Field(primary_key=True, max_length=64)
    kind: str = Field(max_length=16)
    definition: str = Field(sa_column=_text())
    definition_hash: str = Field(max_length=64)
    proposer: str = Field(max_length=64)
    status: str = Field(max_length=16, index=True)
    created_at: int
    expires_at: int
    target_keyset: str | None = Field(default=None, max_length=64)
    keyset: str | None = Field(default=None, max_length=64)
    state: str = Field(sa_column=_text())
    transcript: str | None = Field(default=None, sa_column=_text_null())


class KeySet(SQLModel, table=True):
    __table_args__ = (Index("ix_keyset_created_at_id", "created_at", "id"),)  # the list's page order
    id: str = Field(primary_key=True, max_length=64)
    ceremony: str = Field(max_length=64)
    curve: str = Field(max_length=16)
    segregation: str = Field(max_length=80)
    status: str = Field(max_length=24, index=True)
    sealed: str = Field(sa_column=_text())
    generation: int = 1
    created_at: int


class KeyRow(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=64)
    keyset: str = Field(max_length=64, index=True)
    position: int
    curve: str = Field(max_length=16)
    public_key: str = Field(max_length=130)
    segregation: str = Field(max_length=80)


class AddressRow(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("chain", "network", "address", name="uq_address"),)
    id: int | None = Field(default=None, primary_key=True)
    key_id: str = Field(max_length=64, index=True)
    keyset: str = Field(max_length=64, index=True)
    chain: str = Field(max_length=16)
    network: str = Field(max_length=16)
    address: str = Field(max_length=128)
    segregation: str = Field(max_length=80)
    birth_proof: str = Field(sa_column=_text())


class Withdrawal(SQLModel, table=True):
    # Velocity reads one wallet's window by these, never every row.
    __table_args__ = (
        Index("ix_withdrawal_keyset_released_at", "keyset", "released_at"),
        Index("ix_withdrawal_keyset_created_at", "keyset", "created_at"),
        Index("ix_withdrawal_created_at_id", "created_at", "id"),
    )
    id: str = Field(primary_key=True, max_length=64)
    keyset: str = Field(max_length=64, index=True)
    key_id: str = Field(max_length=64)
    chain: str = Field(max_length=16)
    network: str = Field(max_length=16)
    requester: str = Field(max_length=64)
    intent: str = Field(sa_column=_text())
    intent_hash: str = Field(max_length=64)
    unsigned_tx: str = Field(sa_column=_text())
    context: str = Field(sa_column=_text())
    tx_digest: str = Field(max_length=64)
    decision: str = Field(sa_column=_text())
    policy_version: int
    status: str = Field(max_length=16, index=True)
    created_at: int
    expires_at: int
    time_lock_until: int | None = None
    released_at: int | None = None
    signed_tx: str | None = Field(default=None, sa_column=_text_null())
    txid: str | None = Field(default=None, max_length=100, index=True)  # our own change, found by txid
    # What counts against limits, as decimal strings of base units (wei exceed 64 bits).
    # Null only on rows written before these columns existed.
    asset: str | None = Field(default=None, max_length=80)
    amount: str | None = Field(default=None, max_length=80)
    fee: str | None = Field(default=None, max_length=80)
    fee_asset: str | None = Field(default=None, max_length=16)
    # The release's lifetime and the operator's record of how it ended.
    release_expires_at: int | None = None
    # Approvals a wallet limit's escalation asked for at a release attempt, beyond the
    # decision made at creation (JSON role -> count, the larger of both); null: none.
    escalated: str | None = Field(default=None, sa_column=_text_null())
    broadcast_at: int | None = None
    confirmed_at: int | None = None
    abandoned_at: int | None = None
    # The decoded transaction view (canonical JSON) as the server checked it at create,
    # for the request's page; null on rows written before the column existed. Nothing
    # signs on its word: release decodes the stored bytes again.
    decoded: str | None = Field(default=None, sa_column=_text_null())


class WithdrawalNonce(SQLModel, table=True):
    """One live withdrawal per (chain, network, from, nonce): the primary key makes the
    database refuse a second. The row goes when its withdrawal ends unspent."""

    chain: str = Field(primary_key=True, max_length=16)
    network: str = Field(primary_key=True, max_length=16)
    address: str = Field(primary_key=True, max_length=128)
    nonce: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    withdrawal: str = Field(max_length=64, index=True)
    created_at: int


class OutpointReservation(SQLModel, table=True):
    """A Bitcoin output that a live withdrawal spends. The primary key is the outpoint, so
    a second withdrawal spending it cannot be inserted while the first holds it."""

    network: str = Field(primary_key=True, max_length=16)
    txid: str = Field(primary_key=True, max_length=64)
    vout: int = Field(primary_key=True)
    withdrawal: str = Field(max_length=64, index=True)
    reserved_at: int


class PolicyRow(SQLModel, table=True):
    version: int = Field(primary_key=True)
    doc: str = Field(sa_column=_text())
    hash: str = Field(max_length=64)
    effective_at: int
    proposal: str | None = Field(default=None, max_length=64)


class AddressBookRow(SQLModel, table=True):
    __table_args__ = (Index("ix_addressbookrow_effective_at_id", "effective_at", "id"),)  # the page order
    id: str = Field(primary_key=True, max_length=64)
    chain: str = Field(max_length=16)
    network: str = Field(max_length=16)
    address: str = Field(max_length=128)
    asset: str | None = Field(default=None, max_length=80)
    label: str = Field(max_length=200)
    effective_at: int
    proposal: str = Field(max_length=64)
    status: str = Field(default="active", max_length=16)


class ProofChallenge(SQLModel, table=True):
    __table_args__ = (Index("ix_proofchallenge_created_at_id", "created_at", "id"),)  # the list's page order
    id: str = Field(primary_key=True, max_length=64)
    nonce: str = Field(max_length=128, unique=True)
    doc: str = Field(sa_column=_text())
    issuer: str = Field(max_length=64)
    status: str = Field(max_length=16)
    created_at: int
    expires_at: int
    bundle: str | None = Field(default=None, sa_column=_text_null())
    bundle_hash: str | None = Field(default=None, max_length=64)


class OperationShare(SQLModel, table=True):
    """A key-set share re-sealed by a member's client to a one-time operation key."""

    __table_args__ = (UniqueConstraint("operation", "side", name="uq_operation_side"),)
    id: int | None = Field(default=None, primary_key=True)
    operation: str = Field(max_length=80, index=True)
    keyset: str = Field(max_length=64)
    side: str = Field(max_length=16)
    member: str = Field(max_length=64)
    sealed: str = Field(sa_column=_text())
    created_at: int


class ReconcileJob(SQLModel, table=True):
    """A background reconciliation: its progress while it runs, then its signed report or
    its error. ``runner`` names the process running it, ``heartbeat_at`` when it last
    wrote: a running job whose runner went silent is shown as interrupted."""

    __table_args__ = (Index("ix_reconcilejob_started_at_id", "started_at", "id"),)  # the list's page order
    id: str = Field(primary_key=True, max_length=64)
    state: str = Field(max_length=16, index=True)
    done: int = 0
    total: int | None = None
    runner: str = Field(max_length=64)
    started_at: int
    heartbeat_at: int
    finished_at: int | None = None
    error_code: str | None = Field(default=None, max_length=64)
    error_message: str | None = Field(default=None, sa_column=_text_null())
    result: str | None = Field(default=None, sa_column=_text_null())
