"""Per-chain transactions: build, decode for review, compare with the intent, sign, and
check a signature; the transaction digest and the fee an approver is shown."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from tandem.core.canonical import (
    check_fields,
    digest_hex,
    parse_amount,
)
from tandem.core.chains import NATIVE_ASSET
from tandem.core.chains import bitcoin as btc
from tandem.core.chains import ethereum as eth
from tandem.core.chains import solana as sol
from tandem.core.chains import solana_tx as stx
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


def prevouts_from_json(items: Any) -> list[btc.Prevout]:
    if not isinstance(items, list):
        raise InputError("prevouts must be a list")
    out = []
    for i, p in enumerate(items):
        check_fields(p, required=("txid", "vout", "amount", "script_pubkey"), where=f"prevouts[{i}]")
        if not isinstance(p["script_pubkey"], str):
            raise InputError(f"prevouts[{i}].script_pubkey must be hex")
        out.append(
            btc.Prevout(
                p["txid"],
                p["vout"],
                parse_amount(p["amount"], where=f"prevouts[{i}].amount"),
                bytes.fromhex(p["script_pubkey"]),
            )
        )
    return out


def prevouts_to_json(prevouts: Iterable[btc.Prevout]) -> list[dict[str, Any]]:
    return [
        {"txid": p.txid, "vout": p.vout, "amount": str(p.amount), "script_pubkey": p.script_pubkey.hex()}
        for p in prevouts
    ]


# --- per-chain transactions ------------------------------------------------------------


@dataclass(frozen=True)
class BuiltTx:
    unsigned: bytes
    prevouts: tuple[dict[str, Any], ...]
    fee: int
    change: int


class TxKind(Protocol):
    chain: ClassVar[str]

    def own_address(self, public_key: bytes, network: str) -> str: ...

    def build(self, intent: Intent, public_key: bytes) -> BuiltTx: ...

    def decode(
        self, intent: Intent, unsigned: bytes, prevouts: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
        """The decoded view, from the bytes alone (and the intent's from/token to label them)."""
        ...

    def mismatches(self, intent: Intent, view: Mapping[str, Any]) -> list[str]: ...

    def sign(
        self, unsigned: bytes, prevouts: Sequence[Mapping[str, Any]], private_key: bytes
    ) -> tuple[bytes, str]: ...

    def check_signed(
        self, signed: bytes, unsigned: bytes, prevouts: Sequence[Mapping[str, Any]], from_address: str
    ) -> str:
        """Raise unless ``signed`` is ``unsigned`` validly signed by ``from_address``; its txid."""
        ...


class _Bitcoin:
    chain: ClassVar[str] = "bitcoin"

    def own_address(self, public_key: bytes, network: str) -> str:
        return btc.p2wpkh_address(public_key, network)

    def build(self, intent: Intent, public_key: bytes) -> BuiltTx:
        assert intent.fee_rate is not None  # noqa: S101 - parse_intent guarantees it
        u = btc.build_p2wpkh_spend(
            from_pubkey=public_key,
            prevouts=[x.prevout for x in intent.utxos],
            destination=intent.destination,
            amount=intent.amount,
            fee_rate=intent.fee_rate,
            network=intent.network,
        )
        return BuiltTx(u.raw, tuple(prevouts_to_json(u.prevouts)), u.fee, u.change)

    def decode(
        self, intent: Intent, unsigned: bytes, prevouts: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
        # Amounts and scripts come from the intent's previous transactions; prevouts given
        # beside the bytes (by the server, say) must agree with them or nothing is shown.
        proven = [u.prevout for u in intent.utxos]
        given = prevouts_from_json(list(prevouts))
        if len(given) != len(proven):
            raise VerificationError(f"{len(given)} prevouts shown for {len(proven)} inputs the intent proves")
        for i, (g, p) in enumerate(zip(given, proven, strict=True)):
            if g != p:
                raise VerificationError(
                    f"prevout {i} ({g.txid}:{g.vout}) says {g.amount} sats to {g.script_pubkey.hex()}; "
                    f"its previous transaction holds {p.amount} sats to {p.script_pubkey.hex()}"
                )
        review = btc.decode_for_review(unsigned, proven, intent.network, change_address=intent.from_address)
        pay = [o for o in review["outputs"] if not o["is_change"]]
        change = sum(int(o["amount"]) for o in review["outputs"] if o["is_change"])
        return {
            "chain": "bitcoin",
            "network": intent.network,
            "chain_id": None,
            "from": intent.from_address,
            "to": pay[0]["address"] if len(pay) == 1 else [o["address"] for o in pay],
            "amount": str(sum(int(o["amount"]) for o in pay)),
            "asset": "BTC",
            "token": None,
            "fee": review["fee"],
            "change": str(change),
            "txid": review["txid"],
            "inputs": review["inputs"],
            "outputs": review["outputs"],
            "vsize": review["vsize"],
        }

    def mismatches(self, intent: Intent, view: Mapping[str, Any]) -> list[str]:
        problems = []
        pay = [o for o in view["outputs"] if not o["is_change"]]
        if len(pay) != 1:
            problems.append(
                f"the transaction pays {len(pay)} outputs outside the wallet; the intent names one"
            )
        elif pay[0]["address"] != intent.destination:
            problems.append(f"destination is {pay[0]['address']}, the intent says {intent.destination}")
        if view["amount"] != str(intent.amount):
            problems.append(f"amount is {view['amount']}, the intent says {intent.amount}")
        spent = [(i["txid"], i["vout"]) for i in view["inputs"]]
        if spent != [(u.txid, u.vout) for u in intent.utxos]:
            problems.append("the transaction spends other outputs than the intent lists")
        return problems

    def sign(
        self, unsigned: bytes, prevouts: Sequence[Mapping[str, Any]], private_key: bytes
    ) -> tuple[bytes, str]:
        return btc.sign_p2wpkh_spend(unsigned, prevouts_from_json(list(prevouts)), private_key)

    def check_signed(
        self, signed: bytes, unsigned: bytes, prevouts: Sequence[Mapping[str, Any]], from_address: str
    ) -> str:
        tx = btc.parse_transaction(signed)
        if tx.serialize(include_witness=False) != unsigned:
            raise VerificationError("the signed transaction is not the approved unsigned transaction")
        for i, prev in enumerate(prevouts_from_json(list(prevouts))):
            btc.verify_p2wpkh_input(signed, i, prev)
        return tx.txid


class _Ethereum:
    chain: ClassVar[str] = "ethereum"

    def own_address(self, public_key: bytes, network: str) -> str:
        return eth.address_from_public_key(public_key)

    def build(self, intent: Intent, public_key: bytes) -> BuiltTx:
        p = intent.eth
        assert p is not None  # noqa: S101 - parse_intent guarantees it
        token = intent.token
        to, value, data = (
            (token, 0, eth.erc20_transfer_calldata(intent.destination, intent.amount))
            if token
            else (intent.destination, intent.amount, b"")
        )
        raw = eth.build_eip1559(
            chain_id=p.chain_id,
            nonce=p.nonce,
            max_priority_fee_per_gas=p.max_priority_fee_per_gas,
            max_fee_per_gas=p.max_fee_per_gas,
            gas_limit=p.gas_limit,
            to=to,
            value=value,
            data=data,
        )
        return BuiltTx(raw, (), p.gas_limit * p.max_fee_per_gas, 0)

    def decode(
        self, intent: Intent, unsigned: bytes, prevouts: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
        if prevouts:
            raise InputError("an Ethereum transaction has no prevouts")
        # Only the intent's own token may be called, and only with transfer(); review()
        # refuses every other call, contract creation and access lists.
        r = eth.review(unsigned, allowed_tokens=[intent.token] if intent.token else [])
        token = r.get("token")
        return {
            "chain": "ethereum",
            "network": r["network"],
            "chain_id": r["chain_id"],
            "from": intent.from_address,
            "to": r["recipient"] if token else r["to"],
            "amount": r["token_amount"] if token else r["value"],
            "asset": token or "ETH",
            "token": token,
            "fee": r["max_fee"],
            "change": None,
            "kind": r["kind"],
            "nonce": r["nonce"],
            "gas_limit": r["gas_limit"],
            "max_fee_per_gas": r["max_fee_per_gas"],
            "max_priority_fee_per_gas": r["max_priority_fee_per_gas"],
            "value": r["value"],
            "contract": r["to"] if token else None,
        }

    def mismatches(self, intent: Intent, view: Mapping[str, Any]) -> list[str]:
        p = intent.eth
        assert p is not None  # noqa: S101
        problems = []
        if view["network"] != intent.network or view["chain_id"] != p.chain_id:
            problems.append(
                f"chain id is {view['chain_id']}, the intent says {p.chain_id} ({intent.network})"
            )
        if (view["to"] or "").lower() != intent.destination.lower():
            problems.append(f"destination is {view['to']}, the intent says {intent.destination}")
        if view["amount"] != str(intent.amount):
            problems.append(f"amount is {view['amount']}, the intent says {intent.amount}")
        if (view["token"] or "ETH").lower() != intent.asset.lower():
            problems.append(f"asset is {view['token'] or 'ETH'}, the intent says {intent.asset}")
        for key in ("nonce", "gas_limit"):
            if view[key] != getattr(p, key):
                problems.append(f"{key} is {view[key]}, the intent says {getattr(p, key)}")
        for key in ("max_fee_per_gas", "max_priority_fee_per_gas"):
            if view[key] != str(getattr(p, key)):
                problems.append(f"{key} is {view[key]}, the intent says {getattr(p, key)}")
        return problems

    def sign(
        self, unsigned: bytes, prevouts: Sequence[Mapping[str, Any]], private_key: bytes
    ) -> tuple[bytes, str]:
        return eth.sign_eip1559(unsigned, private_key)

    def check_signed(
        self, signed: bytes, unsigned: bytes, prevouts: Sequence[Mapping[str, Any]], from_address: str
    ) -> str:
        tx = eth.decode_transaction(signed)
        if not tx.is_signed or tx.unsigned_bytes() != unsigned:
            raise VerificationError("the signed transaction is not the approved unsigned transaction")
        sender = eth.recover_sender(signed)
        if sender.lower() != from_address.lower():
            raise VerificationError(f"the transaction is signed by {sender}, not by {from_address}")
        return eth.transaction_hash(signed)


class _Solana:
    chain: ClassVar[str] = "solana"

    def own_address(self, public_key: bytes, network: str) -> str:
        return sol.address_from_public_key(public_key)

    def build(self, intent: Intent, public_key: bytes) -> BuiltTx:
        p = intent.sol
        assert p is not None  # noqa: S101 - parse_intent guarantees it
        raw = stx.build_transfer(
            payer=intent.from_address,
            destination=intent.destination,
            amount=intent.amount,
            recent_blockhash=p.recent_blockhash,
            nonce_account=p.nonce_account,
            mint=intent.token,
            decimals=p.decimals,
            create_destination_account=p.create_destination_account,
            compute_unit_limit=p.compute_unit_limit,
            compute_unit_price=p.compute_unit_price,
            token_program=p.program,
        )
        return BuiltTx(raw, (), stx.review(raw).fee, 0)

    def decode(
        self, intent: Intent, unsigned: bytes, prevouts: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
        if prevouts:
            raise InputError("a Solana transaction has no prevouts")
        r = stx.review(unsigned)
        to = r.destination
        if r.mint is not None and not r.creates_destination_account:
            # The owner is not in the bytes; the receiving account must be the intent's
            # destination's own associated account, or the view names the account itself.
            owner_account = stx.associated_token_address(intent.destination, r.mint, str(r.token_program))
            to = (
                intent.destination
                if r.destination_token_account == owner_account
                else str(r.destination_token_account)
            )
        return {
            "chain": "solana",
            "network": intent.network,
            "chain_id": None,
            "from": r.payer,
            "to": to,
            "amount": str(r.amount),
            "asset": r.mint or "SOL",
            "token": r.mint,
            "decimals": r.decimals,
            "fee": str(r.fee),
            "change": None,
            "txid": None,
            "recent_blockhash": r.recent_blockhash,
            "nonce_account": r.nonce_account,
            "source_token_account": r.source_token_account,
            "destination_token_account": r.destination_token_account,
            "creates_destination_account": r.creates_destination_account,
            "compute_unit_limit": r.compute_unit_limit,
            "compute_unit_price": r.compute_unit_price,
            "priority_fee": None if r.compute_unit_price is None else str(r.priority_fee),
            "token_program": r.token_program,
        }

    def mismatches(self, intent: Intent, view: Mapping[str, Any]) -> list[str]:
        p = intent.sol
        assert p is not None  # noqa: S101
        problems = []
        if view["from"] != intent.from_address:
            problems.append(
                f"the fee payer and signer is {view['from']}, the intent says {intent.from_address}"
            )
        if view["to"] != intent.destination:
            problems.append(f"destination is {view['to']}, the intent says {intent.destination}")
        if view["amount"] != str(intent.amount):
            problems.append(f"amount is {view['amount']}, the intent says {intent.amount}")
        if view["asset"] != intent.asset:
            problems.append(f"asset is {view['asset']}, the intent says {intent.asset}")
        for key in (
            "recent_blockhash",
            "nonce_account",
            "decimals",
            "compute_unit_limit",
            "compute_unit_price",
        ):
            if view.get(key) != getattr(p, key):
                problems.append(f"{key} is {view[key]}, the intent says {getattr(p, key)}")
        if intent.token is not None and view.get("token_program") != p.program:
            problems.append(f"the token program is {view.get('token_program')}, the intent says {p.program}")
        if view["creates_destination_account"] != p.create_destination_account:
            problems.append("the transaction and the intent differ on creating the destination token account")
        return problems

    def sign(
        self, unsigned: bytes, prevouts: Sequence[Mapping[str, Any]], private_key: bytes
    ) -> tuple[bytes, str]:
        return stx.sign_message(unsigned, private_key)

    def check_signed(
        self, signed: bytes, unsigned: bytes, prevouts: Sequence[Mapping[str, Any]], from_address: str
    ) -> str:
        return stx.verify_transaction(signed, unsigned, from_address)


_KINDS: dict[str, TxKind] = {k.chain: k for k in (_Bitcoin(), _Ethereum(), _Solana())}


def tx_kind(chain: str) -> TxKind:
    try:
        return _KINDS[chain]
    except KeyError:
        raise InputError(f"Tandem builds withdrawals on {', '.join(sorted(_KINDS))}, not {chain!r}") from None


def build_transaction(intent: Intent, public_key: bytes, *, allowed_tokens: Collection[str]) -> BuiltTx:
    """The unsigned transaction for ``intent`` from the key ``public_key``.

    ``allowed_tokens`` are the ERC-20 contracts the address book names; a token intent
    for any other contract is refused before anything is built.
    """
    kind = tx_kind(intent.chain)
    if kind.own_address(public_key, intent.network) != intent.from_address:
        raise InputError(f"intent.from {intent.from_address} is not the address of the wallet key")
    token = intent.token
    # EVM addresses are hex (case is only a checksum); base58 mints are case-sensitive.
    fold = str.lower if intent.chain == "ethereum" else str
    if token is not None and fold(token) not in {fold(t) for t in allowed_tokens}:
        raise DisallowedContractCallError(
            f"token contract {token} is not allowed on {intent.network}: no address-book entry names it"
        )
    return kind.build(intent, public_key)


def check_transaction(
    intent: Intent, *, public_key: bytes, unsigned: bytes, prevouts: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """What the approving client (and the signer) runs: decode the raw bytes, compare them
    with the intent field by field, then require the bytes to be exactly what the intent
    builds. Returns the decoded view; raises :class:`VerificationError` on any difference."""
    kind = tx_kind(intent.chain)
    if kind.own_address(public_key, intent.network) != intent.from_address:
        raise VerificationError(f"the signing key is not the key of {intent.from_address}")
    view = kind.decode(intent, unsigned, prevouts)
    problems = kind.mismatches(intent, view)
    if problems:
        raise VerificationError("the transaction does not do what the intent says: " + "; ".join(problems))
    rebuilt = kind.build(intent, public_key)
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
    amount = int(view["fee"])
    if intent.chain == "bitcoin":
        vsize = int(view["vsize"])
        effective = -(-amount // vsize) if vsize > 0 else amount
        return Fee(amount=amount, asset=NATIVE_ASSET["bitcoin"], rate=max(intent.fee_rate or 0, effective))
    if intent.chain == "solana":
        price = view.get("compute_unit_price")
        return Fee(
            amount=amount,
            asset=NATIVE_ASSET["solana"],
            rate=stx.LAMPORTS_PER_SIGNATURE,
            priority_rate=None if price is None else int(price),
        )
    return Fee(
        amount=amount,
        asset=NATIVE_ASSET["ethereum"],
        rate=int(view["max_fee_per_gas"]),
        priority_rate=int(view["max_priority_fee_per_gas"]),
    )


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
    return tx_kind(chain).sign(unsigned, prevouts, private_key)


def check_signed_transaction(
    chain: str, signed: bytes, *, unsigned: bytes, prevouts: Sequence[Mapping[str, Any]], from_address: str
) -> str:
    return tx_kind(chain).check_signed(signed, unsigned, prevouts, from_address)
