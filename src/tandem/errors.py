"""One error hierarchy for the whole of Tandem.

Every refusal carries a stable machine ``code`` (used by the API and recorded in the
audit log) and a human ``message``. Messages never contain secret material: callers
pass only public facts (identifiers, counts, field names).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar


class Error(Exception):
    """Base of every Tandem error. ``status`` is the HTTP status the API answers with."""

    code: ClassVar[str] = "error"
    status: ClassVar[int] = 400
    # Set once the refusal is in the audit log, so no outer handler records it twice.
    audited: bool

    def __init__(self, message: str, *, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = dict(details or {})
        self.audited = False

    def diagnostics(self) -> str:
        """Text for a person: what went wrong and, where known, what to do."""
        return f"{self.message} [{self.code}]"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            out["details"] = self.details
        return out


# --- input -----------------------------------------------------------------------------


class InputError(Error):
    code = "invalid_input"
    status = 422


class MalformedJSONError(InputError):
    code = "malformed_json"


class DuplicateKeyError(InputError):
    code = "duplicate_key"


class FloatNotAllowedError(InputError):
    code = "float_not_allowed"


class UnknownFieldError(InputError):
    code = "unknown_field"


class PayloadTooLargeError(InputError):
    code = "payload_too_large"
    status = 413


class NestingTooDeepError(InputError):
    code = "nesting_too_deep"


class InvalidAddressError(InputError):
    code = "invalid_address"


class InvalidAmountError(InputError):
    code = "invalid_amount"


class InvalidDefinitionError(InputError):
    code = "invalid_definition"


class InvalidTransactionError(InputError):
    code = "invalid_transaction"


class DisallowedContractCallError(InputError):
    code = "disallowed_contract_call"


class InsufficientFundsError(InputError):
    code = "insufficient_funds"


class UnprovenInputError(InvalidTransactionError):
    """A Bitcoin input whose amount and script are not proven by the transaction it spends."""

    code = "unproven_input"


# --- authentication and authorisation ----------------------------------------------------


class AuthError(Error):
    code = "unauthenticated"
    status = 401


class BadSignatureError(AuthError):
    """The signature was checked and is wrong (as opposed to: could not be checked)."""

    code = "bad_signature"


class KeyRotatedError(BadSignatureError):
    """Signed with a key the member held before a key rotation took effect: the member
    acts with its new keystore from then on."""

    code = "key_rotated"


class UnknownActorError(AuthError):
    code = "unknown_actor"


class StaleActionError(AuthError):
    code = "stale_action"


class ReplayError(AuthError):
    code = "replayed_action"
    status = 409


class WrongDeploymentError(AuthError):
    code = "wrong_deployment"


class WrongActionTypeError(AuthError):
    code = "wrong_action_type"


class SessionError(AuthError):
    code = "invalid_session"


class ForbiddenError(Error):
    code = "forbidden"
    status = 403


class RoleNotAllowedError(ForbiddenError):
    code = "role_not_allowed"


class SelfApprovalError(ForbiddenError):
    code = "self_approval"


class NotPublicError(ForbiddenError):
    """Asked for without a session, a file that is not served publicly (ADR 0012)."""

    code = "not_public"


class DuplicateIdentityError(ForbiddenError):
    code = "duplicate_identity"
    status = 409


class MemberRemovedError(ForbiddenError):
    code = "member_removed"


# --- second factor -----------------------------------------------------------------------


class TotpError(AuthError):
    code = "totp_invalid"


class TotpReplayError(TotpError):
    code = "totp_replayed"


class TotpLockedError(TotpError):
    code = "totp_locked"
    status = 429


class TotpThrottledError(TotpError):
    code = "totp_throttled"
    status = 429


# --- claiming a fresh server (THREATS 23) -------------------------------------------------


class ClaimTokenError(AuthError):
    """Genesis presented a wrong claim token, or the server has no unused one."""

    code = "claim_token_invalid"
    status = 403


class ClaimTokenRequiredError(ClaimTokenError):
    code = "claim_token_required"


# --- policy and state --------------------------------------------------------------------


class PolicyError(Error):
    code = "policy_refused"
    status = 403


class QuorumNotMetError(PolicyError):
    code = "quorum_not_met"
    status = 409


class EscalatedError(QuorumNotMetError):
    """At release the policy asked for more approvals than the request has (a wallet
    limit's escalation): the request waits for them again; nothing was signed."""

    code = "escalated"


class EscalationUnsatisfiableError(QuorumNotMetError):
    """The approvals an escalation asks for can never be given: not enough members of a
    role other than the requester. Nothing was signed and nothing changed."""

    code = "escalation_unsatisfiable"


class NoMatchingRuleError(PolicyError):
    code = "no_matching_rule"


class DestinationNotAllowedError(PolicyError):
    code = "destination_not_allowed"


class LimitExceededError(PolicyError):
    code = "limit_exceeded"


class VelocityExceededError(PolicyError):
    code = "velocity_exceeded"


class FeeExceededError(PolicyError):
    """A fee (absolute, rate, tip or share of the amount) above the policy or chain cap."""

    code = "fee_exceeded"


class WalletLimitExceededError(PolicyError):
    """A wallet-level limit (total or count over a window), whichever rule matched."""

    code = "wallet_limit_exceeded"


class TimeLockedError(PolicyError):
    code = "time_locked"
    status = 409


class PolicyVersionError(PolicyError):
    code = "policy_version_mismatch"
    status = 409


class RateLimitedError(Error):
    """Too many session-less requests from one address; ``details.retry_in_seconds``."""

    code = "rate_limited"
    status = 429


class ExpiredError(Error):
    code = "expired"
    status = 410


class NotFoundError(Error):
    code = "not_found"
    status = 404


class ConflictError(Error):
    code = "conflict"
    status = 409


class InvalidStateError(ConflictError):
    code = "invalid_state"


class AlreadyReleasedError(ConflictError):
    code = "already_released"


class IdempotencyConflictError(ConflictError):
    code = "idempotency_conflict"


class NonceInUseError(ConflictError):
    """Another live withdrawal already holds this (chain, network, from, nonce)."""

    code = "nonce_in_use"


class TxidMismatchError(ConflictError):
    """A recorded broadcast names another transaction than the one released."""

    code = "txid_mismatch"


class OutpointReservedError(ConflictError):
    """The output is already being spent by another live withdrawal."""

    code = "outpoint_reserved"


class OperationKeyLostError(ConflictError):
    """The signer no longer holds a request's one-time operation key (it was used, or
    the server restarted). The approvals stand; both sides give their shares again to a
    new operation. Its own code, so a client chooses the recovery by code, not by words."""

    code = "operation_key_lost"


class TamperedError(Error):
    code = "tampered"
    status = 409


class ReshareRequiredError(ConflictError):
    code = "reshare_required"


class ShareAlreadyStoredError(ConflictError):
    """A share for this operation and side is already stored; it is never replaced."""

    code = "share_already_stored"


class CommitmentMismatchError(InputError):
    code = "commitment_mismatch"


# --- cryptography and verification -------------------------------------------------------


class CryptoError(Error):
    code = "crypto_error"
    status = 400


class DecryptionError(CryptoError):
    code = "decryption_failed"


class KeystoreError(CryptoError):
    code = "keystore_error"


class VerificationError(Error):
    """Something offline-verifiable did not verify: it is wrong, not unverifiable."""

    code = "verification_failed"
    status = 422


class AuditVerificationError(VerificationError):
    code = "audit_verification_failed"

    def __init__(
        self, message: str, *, index: int | None = None, details: Mapping[str, Any] | None = None
    ) -> None:
        merged = dict(details or {})
        if index is not None:
            merged["first_bad_entry"] = index
        super().__init__(message, details=merged)
        self.index = index


class PinError(VerificationError):
    """What the server shows is not what the member's genesis pin vouches for: another
    deployment, another service key, or an operation key that key did not sign."""

    code = "pin_mismatch"


class NotPinnedError(PinError):
    """The member's machine holds no genesis pin, so it cannot tell whose key it sees."""

    code = "not_pinned"


class KeysetPinError(PinError):
    """The key set served differs from the one the member countersigned (THREATS 41)."""

    code = "keyset_mismatch"


class KeysetNotPinnedError(KeysetPinError):
    """The member never countersigned or imported a transcript of this key set."""

    code = "keyset_not_pinned"


class CannotVerifyError(Error):
    """Verification could not be carried out (missing data, unsupported format)."""

    code = "cannot_verify"
    status = 422


# --- service state -----------------------------------------------------------------------


class SealedError(Error):
    code = "sealed"
    status = 503


class AuditWriteError(Error):
    code = "audit_write_failed"
    status = 500


class ConfigurationError(Error):
    code = "configuration_error"
    status = 500


# --- chain access ------------------------------------------------------------------------
# Raised by tandem.chainio when a node or an offline snapshot is asked about a chain.
# Messages name the method and the node's host, never a URL's credentials or path.


class ChainBackendError(Error):
    code = "chain_backend_error"
    status = 502


class ChainConfigError(ChainBackendError):
    """A chain endpoint is configured wrongly (unknown chain, network or backend kind)."""

    code = "chain_config_invalid"
    status = 500


class ChainNotConfiguredError(ChainBackendError):
    """No backend is configured for this chain and network: chain access is off by default."""

    code = "chain_not_configured"
    status = 503


class ChainUnsupportedError(ChainBackendError):
    """The backend cannot answer this at all (an offline snapshot cannot broadcast)."""

    code = "chain_unsupported"
    status = 501


class ChainUnreachableError(ChainBackendError):
    code = "chain_unreachable"
    status = 503


class ChainTimeoutError(ChainUnreachableError):
    code = "chain_timeout"
    status = 504


class ChainBadResponseError(ChainBackendError):
    """The node answered, but not in the shape or with the values it must have."""

    code = "chain_bad_response"


class ChainMismatchError(ChainBadResponseError):
    """The node serves another chain or network than the one it is configured for."""

    code = "chain_mismatch"


class ChainRejectedError(ChainBackendError):
    """The node understood and refused: a JSON-RPC error object, a rejected broadcast."""

    code = "chain_rejected"
    status = 422


class MixedNetworksError(ConfigurationError):
    """A key set holds one key on two networks of one chain (e.g. bitcoin mainnet and testnet)."""

    code = "mixed_networks"
    status = 503


# --- reaching the Tandem server (member side) ----------------------------------------------
# Raised by tandem.client when no answer came back; the CLI names the URL and what to check.


class ServerUnreachableError(Error):
    code = "unreachable"
    status = 503


class ServerURLError(ServerUnreachableError):
    """The server URL cannot be used (no http:// or https:// scheme, no host)."""

    code = "server_url_invalid"


class ServerTimeoutError(ServerUnreachableError):
    code = "server_timeout"
    status = 504


class ServerTLSError(ServerUnreachableError):
    code = "server_tls_failed"


class RemoteError(Error):
    """An error answered by the server, carrying its stable code."""

    def __init__(self, code: str, message: str, status: int, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details=details)
        self.remote_code = code
        self.http_status = status

    def diagnostics(self) -> str:
        return f"{self.message} [{self.remote_code}, HTTP {self.http_status}]"

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.remote_code, "message": self.message}
