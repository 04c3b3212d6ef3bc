"""Withdrawal transactions: build, decode for review, compare with the intent, sign, and
check a signature, each by the chain's own ``chain.tx`` from the chain registry; the
transaction digest and the fee an approver is shown."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from tandem.core.canonical import (
    digest_hex,
)
from tandem.core.chains import CHAINS
from tandem.core.chains.base import BuiltTx, ChainTx
from tandem.core.policy import (
    FEE_RATE_UNIT,
    PRIORITY_FEE_UNIT,
    Fee,
    fee_share_text,
)
from tandem.core.withdrawal.intent import Intent
from tandem.errors import (
    DisallowedContractCallError,
    InputError,
    VerificationError,
)

TX_DOMAIN = "withdrawal-tx"


def tx_digest(
    *, chain: str, network: str, public_key: str, unsigned_tx: str, prevouts: Sequence[Mapping[str, Any]]
) -> str:
    """What an approval binds besides the intent: the exact unsigned bytes, the key that
    will sign, and (Bitcoin) the prevouts whose amounts the signatures commit to."""
    return digest_hex(
        TX_DOMAIN,
        {
            "chain": chain,
            "network": network,
            "public_key": public_key,
            "unsigned_tx": unsigned_tx,
            "prevouts": [dict(p) for p in prevouts],
        },
    )


def chain_tx(chain: str) -> ChainTx:
    """The withdrawal transactions of ``chain``, from the chain registry."""
    try:
        return CHAINS[chain].tx
    except KeyError:
        raise InputError(f"Tandem builds withdrawals on {', '.join(sorted(CHAINS))}, not {chain!r}") from None


def build_transaction(intent: Intent, public_key: bytes, *, allowed_tokens: Collection[str]) -> BuiltTx:
    """The unsigned transaction for ``intent`` from the key ``public_key``.

    ``allowed_tokens`` are the ERC-20 contracts the address book names; a token intent
    for any other contract is refused before anything is built.
    """
    tx = chain_tx(intent.chain)
    if tx.own_address(public_key, intent.network) != intent.from_address:
        raise InputError(f"intent.from {intent.from_address} is not the address of the wallet key")
    token = intent.token
    if token is not None and tx.token_key(token) not in {tx.token_key(t) for t in allowed_tokens}:
        raise DisallowedContractCallError(
            f"token contract {token} is not allowed on {intent.network}: no address-book entry names it"
        )
    return tx.build(intent, public_key)


def check_transaction(
    intent: Intent, *, public_key: bytes, unsigned: bytes, prevouts: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """What the approving client (and the signer) runs: decode the raw bytes, compare them
    with the intent field by field, then require the bytes to be exactly what the intent
    builds. Returns the decoded view; raises :class:`VerificationError` on any difference."""
    tx = chain_tx(intent.chain)
    if tx.own_address(public_key, intent.network) != intent.from_address:
        raise VerificationError(f"the signing key is not the key of {intent.from_address}")
    view = tx.decode(intent, unsigned, prevouts)
    problems = tx.mismatches(intent, view)
    if problems:
        raise VerificationError("the transaction does not do what the intent says: " + "; ".join(problems))
    rebuilt = tx.build(intent, public_key)
    if rebuilt.unsigned != unsigned or list(rebuilt.prevouts) != [dict(p) for p in prevouts]:
        raise VerificationError("the transaction bytes differ from the transaction the intent builds")
    return view


def fee_of(intent: Intent, view: Mapping[str, Any]) -> Fee:
    """The worst-case fee of a checked transaction, from its decoded view.

    Bitcoin: inputs - outputs (input amounts from the prevouts the signatures commit
    to), at the higher of the stated and the effective sat/vB. Ethereum: gas_limit x
    max_fee_per_gas, at max_fee_per_gas, with the priority fee beside it. Solana: the
    signature fee, the priority fee at the message's compute-unit limit and any rent, at
    the signature fee, with the compute-unit price beside it.
    """
    return chain_tx(intent.chain).fee(intent, view)


def fee_review(intent: Intent, view: Mapping[str, Any], *, warn_bps: int) -> dict[str, Any]:
    """What an approver is shown about the fee: amount, rate, share of the amount, and a
    warning once the share passes ``warn_bps`` (or the fee is paid in another asset)."""
    fee = fee_of(intent, view)
    same_asset = fee.asset.lower() == intent.asset.lower()
    share_bps = fee.amount * 10_000 // intent.amount if same_asset else None
    warning = None
    if same_asset and fee.amount * 10_000 > warn_bps * intent.amount:
        warning = (
            f"the fee is {fee_share_text(fee.amount, intent.amount)} of the amount, above "
            f"{fee_share_text(warn_bps, 10_000)}: check the fee rate before approving"
        )
    return {
        "fee": str(fee.amount),
        "asset": fee.asset,
        "rate": str(fee.rate),
        "rate_unit": FEE_RATE_UNIT[intent.chain],
        "priority_rate": None if fee.priority_rate is None else str(fee.priority_rate),
        "priority_unit": PRIORITY_FEE_UNIT.get(intent.chain, FEE_RATE_UNIT[intent.chain]),
        "share": fee_share_text(fee.amount, intent.amount) if same_asset else None,
        "share_bps": share_bps,
        "warning": warning,
    }


def sign_transaction(
    chain: str, unsigned: bytes, prevouts: Sequence[Mapping[str, Any]], private_key: bytes
) -> tuple[bytes, str]:
    """RFC 6979, low-S, by the chain module."""
    return chain_tx(chain).sign(unsigned, prevouts, private_key)


def check_signed_transaction(
    chain: str, signed: bytes, *, unsigned: bytes, prevouts: Sequence[Mapping[str, Any]], from_address: str
) -> str:
    return chain_tx(chain).check_signed(signed, unsigned, prevouts, from_address)
