"""Withdrawals, pure: the intent, its hash and fingerprint, the transaction Tandem builds
from it, the decoded view a person reviews, the state machine, and the verification an
offline signer runs on an exported bundle.

Nothing here reads a clock, a database or the network. The server, the approving
member's client and the air-gapped signer all call the same functions, so they reach
the same hashes and the same verdicts from the same bytes.

An *intent* is what the manager asks for (wallet, from address, asset, amount,
destination, and the chain parameters the manager supplies: UTXOs and fee rate for
Bitcoin; chain id, nonce, fees and gas for Ethereum). It is normalised strictly by
:func:`parse_intent` and hashed under the ``withdrawal-intent`` domain. The *transaction
digest* binds the unsigned transaction bytes, the signing public key and (Bitcoin) the
prevouts the BIP-143 signatures commit to. An approval signs both, plus the request id,
the policy version and its own expiry; release recomputes both from what is stored.

The parts, one module each:

- :mod:`.intent` parses, normalises and hashes intents, one parser per chain;
- :mod:`.tx` builds, decodes, compares, signs and checks transactions, each by the
  chain's ``chain.tx`` (:class:`tandem.core.chains.base.ChainTx`) from the one chain
  registry;
- :mod:`.state` is the state machine;
- :mod:`.approval` is what an approval signs, :mod:`.book` the address book in force;
- :mod:`.bundle` is the offline signer's verification of an exported bundle.

This package re-exports their public names, so ``from tandem.core import withdrawal``
reaches all of them.
"""

from tandem.core.chains.base import BuiltTx
from tandem.core.chains.bitcoin import Utxo, prevouts_from_json, prevouts_to_json
from tandem.core.chains.ethereum import EthParams
from tandem.core.chains.solana_tx import SolParams
from tandem.core.withdrawal.approval import (
    APPROVAL_FIELDS,
    SHARE_FIELDS,
    approval_body,
    parse_approval,
    share_digest,
)
from tandem.core.withdrawal.book import BookAddition, address_book_at, allowed_tokens
from tandem.core.withdrawal.bundle import (
    BUNDLE_FORMAT,
    BUNDLE_INDEX_DOMAIN,
    HISTORY_KINDS,
    RESULT_FORMAT,
    SparseLog,
    VerifiedBundle,
    bundle_index_body,
    counted_amount,
    offline_operation_id,
    offline_sign,
    sign_bundle_index,
    verify_bundle,
    verify_bundle_index,
    verify_sparse_log,
)
from tandem.core.withdrawal.intent import (
    INTENT_DOMAIN,
    MAX_PREV_TX_TOTAL_BYTES,
    MAX_UTXOS,
    NETWORKS,
    Intent,
    fingerprint,
    intent_hash,
    normalize_intent,
    parse_intent,
    require_normal_intent,
)
from tandem.core.withdrawal.state import (
    ABANDONED,
    APPROVED,
    BROADCAST,
    CANCELLED,
    CONFIRMED,
    ENDED_UNSPENT,
    EXPIRED,
    LAPSED,
    OPEN,
    PENDING,
    REJECTED,
    RELEASED,
    SIGNED,
    TAMPERED,
    VETOED,
    WithdrawalStatus,
    effective_status,
    holds_nonce,
    transition,
)
from tandem.core.withdrawal.tx import (
    TX_DOMAIN,
    build_transaction,
    chain_tx,
    check_signed_transaction,
    check_transaction,
    fee_of,
    fee_review,
    sign_transaction,
    tx_digest,
)

__all__ = [
    "ABANDONED",
    "APPROVAL_FIELDS",
    "APPROVED",
    "BROADCAST",
    "BUNDLE_FORMAT",
    "BUNDLE_INDEX_DOMAIN",
    "CANCELLED",
    "CONFIRMED",
    "ENDED_UNSPENT",
    "EXPIRED",
    "HISTORY_KINDS",
    "INTENT_DOMAIN",
    "LAPSED",
    "MAX_PREV_TX_TOTAL_BYTES",
    "MAX_UTXOS",
    "NETWORKS",
    "OPEN",
    "PENDING",
    "REJECTED",
    "RELEASED",
    "RESULT_FORMAT",
    "SHARE_FIELDS",
    "SIGNED",
    "TAMPERED",
    "TX_DOMAIN",
    "VETOED",
    "BookAddition",
    "BuiltTx",
    "EthParams",
    "Intent",
    "SolParams",
    "SparseLog",
    "Utxo",
    "VerifiedBundle",
    "WithdrawalStatus",
    "address_book_at",
    "allowed_tokens",
    "approval_body",
    "build_transaction",
    "bundle_index_body",
    "chain_tx",
    "check_signed_transaction",
    "check_transaction",
    "counted_amount",
    "effective_status",
    "fee_of",
    "fee_review",
    "fingerprint",
    "holds_nonce",
    "intent_hash",
    "normalize_intent",
    "offline_operation_id",
    "offline_sign",
    "parse_approval",
    "parse_intent",
    "prevouts_from_json",
    "prevouts_to_json",
    "require_normal_intent",
    "share_digest",
    "sign_bundle_index",
    "sign_transaction",
    "transition",
    "tx_digest",
    "verify_bundle",
    "verify_bundle_index",
    "verify_sparse_log",
]
