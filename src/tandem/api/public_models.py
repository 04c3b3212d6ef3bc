"""What the API answers: one model per kind of object, for the OpenAPI document and
for checking the service's answers on their way out.

A :class:`Public` model names and types the fields a client relies on and keeps every
other field the service returns (``extra="allow"``). What is served is the service's
own document, key for key and in its order: the model checks it, it never drops,
renames, reorders or re-encodes a field, so a signed document inside an answer keeps
its bytes (such fields are typed ``dict[str, Any]`` all the same). A named field the
service leaves out stays out; only where every answer carries one is it required.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, PrivateAttr, model_serializer, model_validator


class Public(BaseModel):
    """An answer's named fields, typed; every other field kept; served as the service
    wrote it."""

    model_config = ConfigDict(extra="allow")
    _source: dict[str, Any] | None = PrivateAttr(default=None)

    @model_validator(mode="wrap")
    @classmethod
    def _keep_source(cls, data: Any, handler: Any) -> Any:
        model = handler(data)
        if isinstance(data, dict) and isinstance(model, Public):
            model._source = data
        return model

    @model_serializer(mode="wrap")
    def _as_served(self, handler: Any) -> Any:
        if self._source is not None:
            return self._source
        return handler(self)


Doc = dict[str, Any]


# --- the service, sessions, members, proposals ---------------------------------------------


class DeploymentPublic(Public):
    deployment: str | None = None
    entity: str | None = None
    genesis_hash: str | None = None
    sealed: bool | None = None
    service: Doc | None = None


class GenesisPublic(Public):
    deployment: str
    genesis_hash: str
    members: list[str] | None = None


class SessionPublic(Public):
    token: str
    member: str
    role: str
    expires_at: int


class TotpEnrolPublic(Public):
    member: str
    totp_enrolled: bool


class MemberPublic(Public):
    id: str
    name: str | None = None
    role: str | None = None
    status: str | None = None
    sign_public: str | None = None
    seal_public: str | None = None
    totp_enrolled: bool | None = None
    added_at: int | None = None
    removed_at: int | None = None


class ProposalPublic(Public):
    """A proposal of any kind (membership, policy, address book); ``digest`` is what an
    approval signs."""

    id: str
    kind: str | None = None
    body: Doc | None = None
    proposer: str | None = None
    status: str | None = None
    created_at: int | None = None
    expires_at: int | None = None
    approved_at: int | None = None
    effective_at: int | None = None
    digest: str | None = None
    required: dict[str, int] | None = None  # approvals per role the policy in force asks for


# --- audit ----------------------------------------------------------------------------------


class CheckpointPublic(Public):
    """A signed checkpoint: ``checkpoint`` is the signed document, as signed."""

    checkpoint: Doc
    signature: str


class InclusionPublic(Public):
    index: int
    tree_size: int
    proof: list[str]
    entry: Doc | None = None
    leaf_hash: str | None = None
    checkpoint: Doc


class ConsistencyPublic(Public):
    old_size: int
    new_size: int
    proof: list[str]
    old_checkpoint: Doc | None = None
    new_checkpoint: Doc | None = None


# --- ceremonies, key sets, proofs -----------------------------------------------------------


class CeremonyPublic(Public):
    id: str
    kind: str | None = None
    status: str | None = None
    proposer: str | None = None
    created_at: int | None = None
    expires_at: int | None = None
    definition_hash: str | None = None
    keyset: str | None = None
    transcript_hash: str | None = None
    digest: str | None = None


class TranscriptPublic(Public):
    """A keygen ceremony's transcript; every part is signed, so each is a document."""

    format: str | None = None
    deployment: str | None = None
    ceremony: Doc | None = None
    definition_hash: str | None = None


class KeysetPublic(Public):
    id: str
    ceremony: str | None = None
    curve: str | None = None
    segregation: str | None = None
    status: str | None = None
    generation: int | None = None
    created_at: int | None = None


class OperationPublic(Public):
    """A one-time operation key for a withdrawal (signed by the service key), the
    sealed key set and the wallet's addresses."""

    operation: Doc | None = None
    keyset: Doc | None = None


class KeysetOperationPublic(Public):
    """A one-time operation key for a reshare or an import, as the service key signed it."""


class KeysetImportPublic(Public):
    """A key-set import approved: the import, the key set and its export hash."""


class KeysetExportPublic(Public):
    """A key set for offline media, as exported (its hash is logged)."""


class ProofChallengePublic(Public):
    id: str
    nonce: str | None = None
    status: str | None = None
    bundle_hash: str | None = None


# --- withdrawals, policy, address book -----------------------------------------------------


class WithdrawalPublic(Public):
    """A withdrawal request: ``intent`` is the signed intent; the raw transactions are
    hex, amounts base units as decimal strings."""

    id: str
    wallet: str | None = None
    chain: str | None = None
    network: str | None = None
    requester: str | None = None
    intent: Doc | None = None
    intent_hash: str | None = None
    fingerprint: str | None = None
    tx_digest: str | None = None
    policy_version: int | None = None
    status: str | None = None
    created_at: int | None = None
    expires_at: int | None = None
    txid: str | None = None
    signed_tx: str | None = None
    fee: str | None = None


class WithdrawalOperationPublic(Public):
    """A new operation key for an open request, and the sealed key set."""

    withdrawal: str
    operation: Doc | None = None


class ShareReceiptPublic(Public):
    """A share taken: for which request, operation and side."""

    withdrawal: str
    side: str | None = None


class BatchItemPublic(Public):
    withdrawal: str
    outcome: str


class BatchApprovalPublic(Public):
    approved: int
    refused: int
    results: list[BatchItemPublic]


class WithdrawalBundlePublic(Public):
    """Everything an offline signer re-verifies (each part as signed)."""


class PolicyPublic(Public):
    version: int | None = None
    hash: str | None = None
    effective_at: int | None = None
    policy: Doc | None = None


class ExplanationPublic(Public):
    """Which rule applies and why, for a withdrawal (as decided) or for given facts."""


class AddressPublic(Public):
    id: str
    chain: str | None = None
    network: str | None = None
    address: str | None = None
    asset: str | None = None
    label: str | None = None
    status: str | None = None


# --- books ----------------------------------------------------------------------------------


class ClientPublic(Public):
    id: str
    name: str | None = None
    segregation: str | None = None


class BooksProposalPublic(Public):
    """A client or allocation proposal not decided yet; ``digest`` is what an approval signs."""

    proposal: str | None = None
    kind: str | None = None
    proposer: str | None = None
    digest: str | None = None


class PositionPublic(Public):
    client: str | None = None
    chain: str | None = None
    network: str | None = None
    asset: str | None = None
    wallet: str | None = None


class MovementPublic(Public):
    """One movement of the register with its evidence; amounts in base units, as strings."""

    id: str
    type: str | None = None
    client: str | None = None
    chain: str | None = None
    network: str | None = None
    asset: str | None = None
    amount: str | None = None


class DepositPublic(Public):
    """A deposit recorded by a scan."""


class SuggestionPublic(Public):
    """What a withdrawal intent needs from the chain (fees, nonce, UTXOs, blockhash)."""


class TrackingPublic(Public):
    """A broadcast release as the chain sees it (and as recorded)."""


class ReportPublic(Public):
    """A signed reconciliation report, or a background job's id (then follow the job)."""


class JobPublic(Public):
    """A background reconciliation: progress, then its report or its error."""

    job: str
    state: str | None = None
    done: int | None = None
    total: int | None = None


class LoggedPublic(Public):
    """An audit entry's data as logged (a report or a statement issued)."""


class PriceImportPublic(Public):
    """The prices imported and their file's hash."""


class PricePublic(Public):
    asset: str | None = None
    currency: str | None = None


class StatementsPublic(Public):
    """Statements of position: JSON, CSV and the PDF (hex), each with its hash."""
