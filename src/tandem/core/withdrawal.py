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

Per-chain work (build, decode, compare, sign, check a signature) goes through one small
interface, :class:`TxKind`, chosen from a registry by chain name.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import nacl.exceptions
import nacl.signing

from tandem.core import approvals as approvals_engine
from tandem.core import audit as audit_core
from tandem.core import merkle, split
from tandem.core.actions import SignedAction, parse_envelope
from tandem.core.canonical import (
    canonical,
    check_fields,
    digest_hex,
    domain_bytes,
    parse_amount,
)
from tandem.core.chains import NATIVE_ASSET
from tandem.core.chains import bitcoin as btc
from tandem.core.chains import ethereum as eth
from tandem.core.chains import psbt as bip174
from tandem.core.chains import solana as sol
from tandem.core.chains import solana_tx as stx
from tandem.core.identity import IdentityCard, canonical_signature, unb64
from tandem.core.membership import REPLAYED_KINDS, LogState, check_genesis, genesis_hash
from tandem.core.policy import (
    FEE_RATE_UNIT,
    PRIORITY_FEE_UNIT,
    AddressBookEntry,
    Fee,
    PastWithdrawal,
    Policy,
    PolicyDecision,
    WithdrawalFacts,
    evaluate,
    fee_share_text,
    parse_policy,
    velocity_window_seconds,
)
from tandem.core.roles import Role, parse_role
from tandem.errors import (
    AlreadyReleasedError,
    AuditVerificationError,
    BadSignatureError,
    DisallowedContractCallError,
    ExpiredError,
    InputError,
    InvalidStateError,
    InvalidTransactionError,
    TimeLockedError,
    VerificationError,
)

INTENT_DOMAIN = "withdrawal-intent"
TX_DOMAIN = "withdrawal-tx"
BUNDLE_FORMAT = "tandem-offline-bundle/2"
BUNDLE_INDEX_DOMAIN = "offline-bundle-index"
RESULT_FORMAT = "tandem-offline-result/1"
MAX_UTXOS = 200
# The previous transactions an intent carries, together; leaves room in a 1 MiB request.
MAX_PREV_TX_TOTAL_BYTES = 300_000

_IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9:._-]{0,79}")
_TXID = re.compile(r"[0-9a-fA-F]{64}")
_HEX = re.compile(r"[0-9a-fA-F]*")
_EVM = re.compile(r"0[xX][0-9a-fA-F]{40}")

_NETWORKS: Mapping[str, Collection[str]] = {
    "bitcoin": btc.NETWORKS,
    "ethereum": eth.CHAIN_IDS,
    "solana": sol.Solana.networks,
}
# Every chain and its networks, for callers outside this module.
NETWORKS: Mapping[str, Collection[str]] = _NETWORKS


# --- the intent ------------------------------------------------------------------------


@dataclass(frozen=True)
class Utxo:
    """An output to spend, with the previous transaction whose hash is ``txid``: the only
    source of its amount and script (see :func:`btc.prevout_from_tx`)."""

    txid: str
    vout: int
    prev_tx: bytes = field(repr=False)  # kept in the legacy serialisation the txid hashes
    prevout: btc.Prevout = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        stripped = btc.strip_witness(self.prev_tx)
        object.__setattr__(self, "prev_tx", stripped)
        object.__setattr__(self, "prevout", btc.prevout_from_tx(stripped, self.txid, self.vout))

    @property
    def amount(self) -> int:
        return self.prevout.amount


@dataclass(frozen=True)
class EthParams:
    chain_id: int
    nonce: int
    max_fee_per_gas: int
    max_priority_fee_per_gas: int
    gas_limit: int


@dataclass(frozen=True)
class SolParams:
    """A Solana intent's chain parameters: the blockhash the message names (a durable
    nonce's stored value when ``nonce_account`` is given, which an approval that takes
    longer than a minute needs), and for tokens the mint's decimals and whether the
    transaction creates the destination's associated token account. A priority fee is
    a compute-unit price (micro-lamports) with the compute-unit limit it is paid at.
    ``token_program`` is set for a Token-2022 mint (None: SPL Token, the default)."""

    recent_blockhash: str
    nonce_account: str | None = None
    decimals: int | None = None
    create_destination_account: bool = False
    compute_unit_limit: int | None = None
    compute_unit_price: int | None = None
    token_program: str | None = None

    @property
    def program(self) -> str:
        """The token program the transfer runs in."""
        return self.token_program or stx.TOKEN_PROGRAM


@dataclass(frozen=True, kw_only=True)
class Intent:
    wallet: str
    from_address: str
    chain: str
    network: str
    asset: str
    amount: int
    destination: str
    client: str | None = None
    utxos: tuple[Utxo, ...] = ()
    fee_rate: int | None = None
    eth: EthParams | None = None
    sol: SolParams | None = None

    @property
    def token(self) -> str | None:
        """The ERC-20 contract or SPL mint, when the asset is a token, not the native coin."""
        if self.chain == "ethereum":
            return self.asset if _EVM.fullmatch(self.asset) else None
        return self.asset if self.chain == "solana" and self.asset != "SOL" else None

    def facts(self, fee: Fee | None = None) -> WithdrawalFacts:
        """The policy's facts; ``fee`` from :func:`fee_of` on the decoded transaction."""
        return WithdrawalFacts(
            wallet=self.wallet,
            chain=self.chain,
            network=self.network,
            asset=self.asset,
            amount=self.amount,
            destination=self.destination,
            fee=fee,
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "wallet": self.wallet,
            "from": self.from_address,
            "chain": self.chain,
            "network": self.network,
            "asset": self.asset,
            "amount": str(self.amount),
            "destination": self.destination,
        }
        if self.client is not None:
            out["client"] = self.client
        if self.chain == "bitcoin":
            out["bitcoin"] = {
                "utxos": [{"txid": u.txid, "vout": u.vout, "prev_tx": u.prev_tx.hex()} for u in self.utxos],
                "fee_rate": self.fee_rate,
            }
        if self.eth is not None:
            out["ethereum"] = {
                "chain_id": self.eth.chain_id,
                "nonce": self.eth.nonce,
                "max_fee_per_gas": str(self.eth.max_fee_per_gas),
                "max_priority_fee_per_gas": str(self.eth.max_priority_fee_per_gas),
                "gas_limit": self.eth.gas_limit,
            }
        if self.sol is not None:
            params: dict[str, Any] = {"recent_blockhash": self.sol.recent_blockhash}
            if self.sol.nonce_account is not None:
                params["nonce_account"] = self.sol.nonce_account
            if self.token is not None:
                params["decimals"] = self.sol.decimals
                params["create_destination_account"] = self.sol.create_destination_account
                if self.sol.token_program is not None:
                    params["token_program"] = self.sol.token_program
            if self.sol.compute_unit_price is not None:
                params["compute_unit_limit"] = self.sol.compute_unit_limit
                params["compute_unit_price"] = self.sol.compute_unit_price
            out["solana"] = params
        return out


_PRIORITY = ("compute_unit_limit", "compute_unit_price")  # a Solana priority fee, both or neither


def _int(obj: Mapping[str, Any], key: str, where: str, *, low: int, high: int) -> int:
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{where}.{key} must be an integer")
    if not low <= value <= high:
        raise InputError(f"{where}.{key} must be in [{low}, {high}]")
    return value


def _ident(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = obj[key]
    if not isinstance(value, str) or not _IDENT.fullmatch(value):
        raise InputError(f"{where}.{key} must be 1-80 letters, digits, ':', '.', '_' or '-'")
    return value


def _address(chain: str, network: str, value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise InputError(f"{what} must be a string")
    if chain == "bitcoin":
        return btc.validate_address(value, network)
    if chain == "solana":
        return sol.validate_address(value)
    return eth.validate_address(value)


def _utxos_from_json(raw_utxos: Any) -> list[Utxo]:
    if not isinstance(raw_utxos, list) or not 1 <= len(raw_utxos) <= MAX_UTXOS:
        raise InputError(f"intent.bitcoin.utxos must list 1-{MAX_UTXOS} outputs to spend")
    utxos = []
    for i, raw in enumerate(raw_utxos):
        w = f"intent.bitcoin.utxos[{i}]"
        check_fields(raw, required=("txid", "vout", "prev_tx"), where=w)
        if not isinstance(raw["txid"], str) or not _TXID.fullmatch(raw["txid"]):
            raise InputError(f"{w}.txid must be 64 hex digits")
        prev_hex = raw["prev_tx"]
        if not isinstance(prev_hex, str) or not _HEX.fullmatch(prev_hex) or len(prev_hex) % 2:
            raise InputError(f"{w}.prev_tx must be the previous transaction in hex")
        if len(prev_hex) > 2 * btc.MAX_TX_BYTES:
            raise InputError(f"{w}.prev_tx is larger than any transaction")
        utxos.append(
            Utxo(
                txid=raw["txid"].lower(),
                vout=_int(raw, "vout", w, low=0, high=0xFFFFFFFF),
                prev_tx=bytes.fromhex(prev_hex),
            )
        )
    return utxos


def _utxos_from_psbt(text: Any, destination: str, amount: int, from_address: str, network: str) -> list[Utxo]:
    """Inputs from a BIP-174 PSBT: each must carry its previous transaction. Tandem builds
    the outputs itself; any the PSBT already has must pay the intent's destination its
    amount (once), or the wallet's own address."""
    if not isinstance(text, str):
        raise InputError("intent.bitcoin.psbt must be base64 text")
    psbt = bip174.decode_psbt_text(text)
    tx = psbt.tx
    if not 1 <= len(tx.inputs) <= MAX_UTXOS:
        raise InputError(f"intent.bitcoin.psbt must spend 1-{MAX_UTXOS} outputs")
    pay = btc.address_to_script(destination, network)
    own = btc.address_to_script(from_address, network)
    payments = [o for o in tx.outputs if o.script_pubkey == pay]
    if tx.outputs and (
        len(payments) != 1
        or payments[0].amount != amount
        or any(o.script_pubkey not in (pay, own) for o in tx.outputs)
    ):
        raise InputError(
            "intent.bitcoin.psbt has outputs other than one payment of intent.amount to "
            "intent.destination and change to intent.from"
        )
    return [Utxo(txid=p.txid, vout=p.vout, prev_tx=p.prev_tx) for p in bip174.proven_inputs(psbt)]


def _check_utxos(utxos: list[Utxo], from_address: str, network: str) -> None:
    """Each output proven by its previous transaction and paid to the wallet; none twice."""
    if len({(u.txid, u.vout) for u in utxos}) != len(utxos):
        raise InputError("intent.bitcoin.utxos lists an output twice")
    own = btc.address_to_script(from_address, network)
    total = 0
    for i, u in enumerate(utxos):
        total += len(u.prev_tx)
        prevout = u.prevout
        if prevout.script_pubkey != own:
            paid = btc.script_to_address(prevout.script_pubkey, network) or prevout.script_pubkey.hex()
            raise InvalidTransactionError(
                f"intent.bitcoin.utxos[{i}] ({u.txid}:{u.vout}) pays {paid}, not intent.from {from_address}"
            )
    if total > MAX_PREV_TX_TOTAL_BYTES:
        raise InputError(
            f"the previous transactions add up to {total} bytes, above {MAX_PREV_TX_TOTAL_BYTES}; "
            "spend fewer outputs per withdrawal"
        )


def parse_intent(doc: Any) -> Intent:  # noqa: C901, PLR0912 - one check per intent field
    """Strictly parse and normalise an intent; see docs/withdrawals.md for the fields."""
    where = "intent"
    check_fields(
        doc,
        required=("wallet", "from", "chain", "network", "asset", "amount", "destination"),
        optional=("client", *NATIVE_ASSET),
        where=where,
    )
    chain = doc["chain"]
    if chain not in NATIVE_ASSET:
        raise InputError(f"intent.chain must be one of {', '.join(NATIVE_ASSET)}")
    network = doc["network"]
    networks = _NETWORKS[chain]
    if network not in networks:
        raise InputError(f"intent.network must be one of {', '.join(sorted(networks))} for {chain}")
    wallet = _ident(doc, "wallet", where)
    client = _ident(doc, "client", where) if "client" in doc else None
    from_address = _address(chain, network, doc["from"], "intent.from")
    destination = _address(chain, network, doc["destination"], "intent.destination")
    if destination.lower() == from_address.lower():
        raise InputError("intent.destination is the wallet's own address; that is not a withdrawal")
    amount = parse_amount(doc["amount"], where="intent.amount")
    if amount < 1:
        raise InputError("intent.amount must be at least 1 base unit")
    asset = doc["asset"]
    if not isinstance(asset, str):
        raise InputError("intent.asset must be a string")
    for other in NATIVE_ASSET:
        if other != chain and other in doc:
            raise InputError(f"intent.{other} does not belong in a {chain} intent")
    if chain not in doc:
        raise InputError(f"intent.{chain} (the chain parameters) is required")
    if chain == "bitcoin":
        if asset != "BTC":
            raise InputError("intent.asset must be BTC on bitcoin")
        params = check_fields(
            doc["bitcoin"], required=("fee_rate",), optional=("utxos", "psbt"), where="intent.bitcoin"
        )
        if ("utxos" in params) == ("psbt" in params):
            raise InputError("intent.bitcoin gives its inputs as either utxos or a psbt (exactly one)")
        if "psbt" in params:
            utxos = _utxos_from_psbt(params["psbt"], destination, amount, from_address, network)
        else:
            utxos = _utxos_from_json(params["utxos"])
        _check_utxos(utxos, from_address, network)
        fee_rate = _int(params, "fee_rate", "intent.bitcoin", low=1, high=btc.MAX_FEE_RATE)
        return Intent(
            wallet=wallet,
            from_address=from_address,
            chain=chain,
            network=network,
            asset=asset,
            amount=amount,
            destination=destination,
            client=client,
            utxos=tuple(utxos),
            fee_rate=fee_rate,
        )
    if chain == "solana":
        return _solana_intent(doc, wallet, client, from_address, network, asset, amount, destination)
    if asset != "ETH":
        if not _EVM.fullmatch(asset):
            raise InputError("intent.asset must be ETH or an ERC-20 contract address (0x + 40 hex)")
        asset = eth.validate_address(asset)
    w = "intent.ethereum"
    params = check_fields(
        doc["ethereum"],
        required=("chain_id", "nonce", "max_fee_per_gas", "max_priority_fee_per_gas", "gas_limit"),
        where=w,
    )
    chain_id = _int(params, "chain_id", w, low=1, high=(1 << 53) - 1)
    if chain_id != eth.CHAIN_IDS[network]:
        raise InputError(f"{w}.chain_id {chain_id} is not {network} ({eth.CHAIN_IDS[network]})")
    eth_params = EthParams(
        chain_id=chain_id,
        nonce=_int(params, "nonce", w, low=0, high=(1 << 53) - 1),
        max_fee_per_gas=parse_amount(params["max_fee_per_gas"], where=f"{w}.max_fee_per_gas"),
        max_priority_fee_per_gas=parse_amount(
            params["max_priority_fee_per_gas"], where=f"{w}.max_priority_fee_per_gas"
        ),
        gas_limit=_int(params, "gas_limit", w, low=eth.MIN_GAS_LIMIT, high=30_000_000),
    )
    if eth_params.max_priority_fee_per_gas > eth_params.max_fee_per_gas:
        raise InputError(f"{w}.max_priority_fee_per_gas exceeds max_fee_per_gas")
    return Intent(
        wallet=wallet,
        from_address=from_address,
        chain=chain,
        network=network,
        asset=asset,
        amount=amount,
        destination=destination,
        client=client,
        eth=eth_params,
    )


def _solana_intent(  # noqa: PLR0917 - the parsed fields of one intent
    doc: Mapping[str, Any],
    wallet: str,
    client: str | None,
    from_address: str,
    network: str,
    asset: str,
    amount: int,
    destination: str,
) -> Intent:
    w = "intent.solana"
    is_token = asset != "SOL"
    if is_token:
        try:
            asset = sol.validate_address(asset)
        except InputError:
            raise InputError("intent.asset must be SOL or an SPL token mint address (base58)") from None
        params = check_fields(
            doc["solana"],
            required=("recent_blockhash", "decimals", "create_destination_account"),
            optional=("nonce_account", "token_program", *_PRIORITY),
            where=w,
        )
        if not isinstance(params["create_destination_account"], bool):
            raise InputError(f"{w}.create_destination_account must be true or false")
        decimals: int | None = _int(params, "decimals", w, low=0, high=255)
        create = params["create_destination_account"]
        program = params.get("token_program")
        if program is not None and program != stx.TOKEN_2022_PROGRAM:
            # One spelling: SPL Token is the default and is not named.
            raise InputError(
                f"{w}.token_program is named only for a Token-2022 mint ({stx.TOKEN_2022_PROGRAM})"
            )
    else:
        params = check_fields(
            doc["solana"], required=("recent_blockhash",), optional=("nonce_account", *_PRIORITY), where=w
        )
        decimals, create, program = None, False, None
    if amount > (1 << 64) - 1:
        raise InputError("intent.amount is more than a Solana transfer can carry (64 bits)")
    if not isinstance(params["recent_blockhash"], str):
        raise InputError(f"{w}.recent_blockhash must be base58 text")
    nonce = params.get("nonce_account")
    if nonce is not None:
        nonce = _address("solana", network, nonce, f"{w}.nonce_account")
        if nonce in (from_address, destination):
            raise InputError(f"{w}.nonce_account must be an account of its own")
    if ("compute_unit_limit" in params) != ("compute_unit_price" in params):
        raise InputError(f"{w}: a priority fee names compute_unit_price and compute_unit_limit together")
    limit = price = None
    if "compute_unit_price" in params:
        limit = _int(params, "compute_unit_limit", w, low=1, high=stx.MAX_COMPUTE_UNIT_LIMIT)
        price = _int(params, "compute_unit_price", w, low=1, high=stx.MAX_COMPUTE_UNIT_PRICE)
    return Intent(
        wallet=wallet,
        from_address=from_address,
        chain="solana",
        network=network,
        asset=asset,
        amount=amount,
        destination=destination,
        client=client,
        sol=SolParams(
            recent_blockhash=stx.validate_blockhash(params["recent_blockhash"]),
            nonce_account=nonce,
            decimals=decimals,
            create_destination_account=create,
            compute_unit_limit=limit,
            compute_unit_price=price,
            token_program=program,
        ),
    )


def normalize_intent(doc: Any) -> dict[str, Any]:
    """The one spelling of an intent that is hashed and signed."""
    return parse_intent(doc).to_json()


def require_normal_intent(doc: Any) -> Intent:
    """Parse an intent that must already be in normal form (as a client signs it)."""
    intent = parse_intent(doc)
    normal = intent.to_json()
    if normal != doc:
        differing = sorted(k for k in normal if normal.get(k) != doc.get(k))
        raise InputError(
            f"intent is not in normal form (field(s) {', '.join(differing)}); "
            "sign the normalised intent (checksummed addresses, canonical amounts)"
        )
    return intent


def intent_hash(intent_doc: Mapping[str, Any]) -> str:
    return digest_hex(INTENT_DOMAIN, dict(intent_doc))


def fingerprint(hash_hex: str) -> str:
    """Four groups of four hex digits, for comparing over a second channel."""
    return "-".join(hash_hex[i : i + 4] for i in range(0, 16, 4))


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


def allowed_tokens(book: Iterable[AddressBookEntry], network: str, chain: str = "ethereum") -> list[str]:
    """Token contracts (ERC-20) or mints (SPL) the address book allows on ``chain`` and
    ``network``: every asset an entry there names that is not the native coin."""
    return sorted(
        {
            e.asset
            for e in book
            if e.chain == chain
            and e.network == network
            and e.asset is not None
            and e.asset != NATIVE_ASSET[chain]
            and (chain != "ethereum" or _EVM.fullmatch(e.asset))
        }
    )


# --- state machine ---------------------------------------------------------------------

PENDING = "pending"
APPROVED = "approved"
RELEASED = "released"
BROADCAST = "broadcast"
CONFIRMED = "confirmed"
ABANDONED = "abandoned"
REJECTED = "rejected"
CANCELLED = "cancelled"
VETOED = "vetoed"
EXPIRED = "expired"
TAMPERED = "tampered"
# Read-only: a release whose end nobody recorded within its lifetime needs attention.
LAPSED = "lapsed"
OPEN = frozenset({PENDING, APPROVED})
# A signed transaction exists; it counts against velocity from its release on.
SIGNED = frozenset({RELEASED, BROADCAST, CONFIRMED, ABANDONED})
# Statuses that hold nothing on chain any more: their Ethereum nonce is free again.
# (Abandoned is the operator's statement that the signed transaction will not be used.)
ENDED_UNSPENT = frozenset({REJECTED, CANCELLED, VETOED, TAMPERED, ABANDONED})

_TRANSITIONS: Mapping[str, Mapping[str, str]] = {
    "approve": {PENDING: PENDING, APPROVED: APPROVED},
    "quorum": {PENDING: APPROVED, APPROVED: APPROVED},
    # At release a wallet limit asked for more approvals: the request waits again.
    "escalate": {APPROVED: PENDING},
    "release": {APPROVED: RELEASED},
    "reject": {PENDING: REJECTED, APPROVED: REJECTED},
    "cancel": {PENDING: CANCELLED, APPROVED: CANCELLED},
    "veto": {PENDING: VETOED, APPROVED: VETOED},
    "tamper": {PENDING: TAMPERED, APPROVED: TAMPERED},
    # After release: what the operator records about the signed transaction.
    "broadcast": {RELEASED: BROADCAST},
    "confirm": {RELEASED: CONFIRMED, BROADCAST: CONFIRMED},
    "abandon": {RELEASED: ABANDONED, BROADCAST: ABANDONED},
    # The node no longer knows a broadcast transaction: it is signed but not sent, and
    # may be sent again (the same bytes, so the same txid).
    "drop": {BROADCAST: RELEASED},
}
# Events about a signed transaction: the request's expiry no longer applies to them.
_AFTER_RELEASE = frozenset({"broadcast", "confirm", "abandon", "drop"})


def effective_status(status: str, expires_at: int, now: int, *, release_expires_at: int | None = None) -> str:
    """Open requests past their expiry read as expired, and a release nobody recorded
    as broadcast, confirmed or abandoned within its lifetime reads as lapsed (nothing
    stores either)."""
    if status in OPEN and now >= expires_at:
        return EXPIRED
    if status == RELEASED and release_expires_at is not None and now >= release_expires_at:
        return LAPSED
    return status


def holds_nonce(status: str, expires_at: int, now: int) -> bool:
    """Whether a withdrawal in ``status`` still claims its (chain, network, from, nonce)."""
    return status not in ENDED_UNSPENT and effective_status(status, expires_at, now) != EXPIRED


def transition(status: str, event: str, *, expires_at: int, now: int) -> str:
    """The next status, or the refusal that says why ``event`` cannot happen now."""
    if event not in _TRANSITIONS:
        raise ValueError(f"unknown withdrawal event {event!r}")
    if status in SIGNED and event in ("release", "approve", "quorum"):
        raise AlreadyReleasedError(f"this withdrawal was already released (it is {status})")
    nxt = _TRANSITIONS[event].get(status)
    if nxt is None:
        raise InvalidStateError(f"withdrawal is {status}; cannot {event} it")
    if event != "tamper" and event not in _AFTER_RELEASE and now >= expires_at:
        raise ExpiredError(f"withdrawal request expired at {expires_at}", details={"expires_at": expires_at})
    return nxt


# --- approvals -------------------------------------------------------------------------

APPROVAL_FIELDS = ("withdrawal", "intent_hash", "tx_digest", "policy_version", "expires_at")
SHARE_FIELDS = ("operation", "share_digest")


def approval_body(
    *,
    withdrawal: str,
    intent_hash_hex: str,
    tx_digest_hex: str,
    policy_version: int,
    expires_at: int,
    operation: str | None = None,
    share_digest: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "withdrawal": withdrawal,
        "intent_hash": intent_hash_hex,
        "tx_digest": tx_digest_hex,
        "policy_version": policy_version,
        "expires_at": expires_at,
    }
    if operation is not None:
        body.update(operation=operation, share_digest=share_digest)
    return body


def parse_approval(body: Any) -> dict[str, Any]:
    check_fields(body, required=APPROVAL_FIELDS, optional=SHARE_FIELDS, where="approval")
    for key in ("withdrawal", "intent_hash", "tx_digest"):
        if not isinstance(body[key], str):
            raise InputError(f"approval.{key} must be a string")
    for key in ("policy_version", "expires_at"):
        if isinstance(body[key], bool) or not isinstance(body[key], int):
            raise InputError(f"approval.{key} must be an integer")
    if ("operation" in body) != ("share_digest" in body):
        raise InputError("approval.operation and approval.share_digest come together")
    return body  # type: ignore[no-any-return]


def share_digest(sealed_b64: str) -> str:
    """Binds a resealed share (sent beside the envelope, never logged) to the signed action."""
    return hashlib.sha256(unb64(sealed_b64, what="sealed_share")).hexdigest()


# --- address book ----------------------------------------------------------------------


@dataclass(frozen=True)
class BookAddition:
    id: str
    entry: AddressBookEntry
    effective_at: int


def address_book_at(
    additions: Iterable[BookAddition], removals: Mapping[str, int], now: int
) -> list[AddressBookEntry]:
    """Entries in force at ``now``: added and past their delay, not removed by then."""
    return [
        a.entry
        for a in additions
        if a.effective_at <= now and not (a.id in removals and removals[a.id] <= now)
    ]


# --- offline bundles -------------------------------------------------------------------

# Kinds that end a withdrawal for velocity purposes (the server keeps the same rule).
_CLOSED_KINDS = {"withdrawal.cancelled", "withdrawal.rejected", "withdrawal.vetoed", "withdrawal.tampered"}


def offline_operation_id(withdrawal_id: str) -> str:
    """The operation a share resealed to the offline signer is bound to."""
    return f"offline-{withdrawal_id}"


@dataclass(frozen=True)
class VerifiedBundle:
    withdrawal: Mapping[str, Any]
    intent: Intent
    view: Mapping[str, Any]
    decision: PolicyDecision
    approvers: frozenset[str]
    members: Mapping[str, Role] = field(default_factory=dict)


def counted_amount(asset: str, amount: int, fee: int, fee_asset: str | None) -> int:
    """What a past withdrawal counts against limits: its amount, plus its worst-case fee
    when that is paid in the same asset (the server and the offline signer agree)."""
    if fee_asset is not None and fee_asset.lower() == asset.lower():
        return amount + fee
    return amount


def _history_from_log(entries: Sequence[Mapping[str, Any]], *, before: int, now: int) -> list[PastWithdrawal]:
    """The velocity history the server used, rebuilt from the log entries (in index
    order) below log index ``before``: a released request counts from its release, an
    open one from its creation until it expires."""
    closed: set[str] = set()
    released: dict[str, int] = {}
    created: list[Mapping[str, Any]] = []
    for e in entries:
        if e["index"] >= before:
            break
        if e["outcome"] != "ok":
            continue
        kind, data = e["kind"], e["data"]
        if kind == "withdrawal.created":
            created.append(e)
        elif kind in _CLOSED_KINDS:
            closed.add(data["withdrawal"])
        elif kind == "withdrawal.released":
            released[data["withdrawal"]] = e["time"]
    out = []
    for e in created:
        d = e["data"]
        wid = d["withdrawal"]
        if wid in closed:
            continue
        amount = counted_amount(d["asset"], int(d["amount"]), int(d.get("fee", "0")), d.get("fee_asset"))
        if wid in released or d["expires_at"] > now:
            at = released.get(wid, e["time"])
            out.append(PastWithdrawal(wallet=d["wallet"], asset=d["asset"], amount=amount, time=at))
    return out


# What the offline signer needs besides the replayed kinds: a request's life, for
# velocity (see ``bundle_index_body``).
HISTORY_KINDS: tuple[str, ...] = ("withdrawal.created", "withdrawal.released", *sorted(_CLOSED_KINDS))
_INDEX_FIELDS = (
    "deployment",
    "tree_size",
    "root",
    "withdrawal",
    "replayed_kinds",
    "history",
    "tail_from",
    "indices",
)


def bundle_index_body(
    *,
    deployment: str,
    tree_size: int,
    root: str,
    withdrawal: str,
    wallet: str,
    since: int,
    created_index: int,
    indices: Sequence[int],
) -> dict[str, Any]:
    """What the service states, signed, about the entries it put in a bundle for the
    tree (``tree_size``, ``root``); see ADR 0011. The entries at ``indices`` are:

    - every entry of a kind in ``replayed_kinds`` (membership, policy, address book,
      key sets, the genesis);
    - every entry from ``tail_from`` (this request's creation) to the end of the tree;
    - every entry of a kind in :data:`HISTORY_KINDS`, below ``history.before``, of each
      request of ``history.wallet`` created or released at or after ``history.since``.

    The signer checks the last two against its own rule and relies on the service's
    signature for completeness, as it relies on the checkpoint for the tree itself."""
    return {
        "deployment": deployment,
        "tree_size": tree_size,
        "root": root,
        "withdrawal": withdrawal,
        "replayed_kinds": list(REPLAYED_KINDS),
        "history": {"wallet": wallet, "since": since, "before": created_index},
        "tail_from": created_index,
        "indices": list(indices),
    }


def sign_bundle_index(sign_seed: bytes, body: Mapping[str, Any]) -> dict[str, Any]:
    """The index document: ``body`` signed with the service key under its own domain
    (never a checkpoint's or a marker's)."""
    signature = (
        nacl.signing.SigningKey(bytes(sign_seed))
        .sign(domain_bytes(BUNDLE_INDEX_DOMAIN, dict(body)))
        .signature
    )
    return {"index": dict(body), "signature": base64.b64encode(bytes(signature)).decode("ascii")}


def _uint(value: Any) -> bool:
    return type(value) is int and value >= 0


def verify_bundle_index(doc: Any, service_public: bytes) -> dict[str, Any]:
    """The body of an index document once its signature verifies under the service key."""
    check_fields(doc, required=("index", "signature"), where="bundle.audit.index")
    body = check_fields(doc["index"], required=_INDEX_FIELDS, where="bundle.audit.index.index")
    signature = canonical_signature(doc["signature"])
    if signature is None:
        raise BadSignatureError("the bundle index signature is not 64 bytes of canonical base64")
    try:
        nacl.signing.VerifyKey(service_public).verify(domain_bytes(BUNDLE_INDEX_DOMAIN, body), signature)
    except nacl.exceptions.BadSignatureError:
        raise BadSignatureError("the bundle index signature does not verify under the service key") from None
    history = check_fields(
        body["history"], required=("wallet", "since", "before"), where="bundle index history"
    )
    if not (_uint(body["tree_size"]) and _uint(body["tail_from"])):
        raise VerificationError("the bundle index sizes must be non-negative integers")
    if not (_uint(history["since"]) and _uint(history["before"])) or not isinstance(history["wallet"], str):
        raise VerificationError("the bundle index history is malformed")
    indices = body["indices"]
    if not isinstance(indices, list) or not all(_uint(i) for i in indices):
        raise VerificationError("the bundle index lists indices that are not non-negative integers")
    return body


@dataclass(frozen=True)
class SparseLog:
    """The entries a bundle carries, each shown to be in the signed tree."""

    index: Mapping[str, Any]
    entries: list[dict[str, Any]]
    tree_size: int
    by_index: Mapping[int, dict[str, Any]]


def verify_sparse_log(audit: Any, *, deployment: str, service_public: bytes) -> SparseLog:  # noqa: C901, PLR0912 - one check per clause of ADR 0011
    """The bundle's log selection, checked against the pinned service key alone:

    the checkpoint's signature; the index's signature and that it names the same tree;
    that it selects every replayed kind this signer knows; that the lines are exactly
    the listed entries and the tail is contiguous to the end of the tree; each line's
    own hash; and each entry's place in the tree, by the next entry's ``prev`` when the
    next entry is included and by an inclusion proof against the signed root otherwise
    (the last entry is also the checkpoint's ``last_hash``). Raises
    :class:`AuditVerificationError` naming the entry at fault."""
    audit = check_fields(audit, required=("checkpoint", "index", "lines", "proofs"), where="bundle.audit")
    try:
        checkpoint = audit_core.verify_checkpoint(audit["checkpoint"], service_public)
        index = verify_bundle_index(audit["index"], service_public)
    except BadSignatureError as exc:
        raise AuditVerificationError(exc.message) from None
    if checkpoint["deployment"] != deployment:
        raise AuditVerificationError("the checkpoint is for another deployment")
    tree_size: int = checkpoint["tree_size"]
    root = bytes.fromhex(checkpoint["root"])
    if (index["deployment"], index["tree_size"], index["root"]) != (
        deployment,
        tree_size,
        checkpoint["root"],
    ):
        raise AuditVerificationError("the bundle's index is for another tree than its checkpoint")
    if index["replayed_kinds"] != list(REPLAYED_KINDS):
        raise AuditVerificationError(
            "the bundle's index selects other entry kinds than this signer replays; "
            "signer and service versions differ"
        )
    indices: list[int] = index["indices"]
    if not indices or indices[0] != 0 or any(b <= a for a, b in itertools.pairwise(indices)):
        raise AuditVerificationError("the bundle's indices must start at the genesis and increase")
    if indices[-1] != tree_size - 1:
        raise AuditVerificationError("the bundle's entries must reach the end of the signed tree")
    tail = tree_size - index["tail_from"]
    if not 1 <= tail <= len(indices) or indices[-tail] != index["tail_from"]:
        # Increasing, ending at tree_size - 1: the last ``tail`` are then exactly the tail.
        raise AuditVerificationError("the bundle's entries after the request's creation are not all there")
    lines, proofs = audit["lines"], audit["proofs"]
    if (
        not isinstance(lines, list)
        or not all(isinstance(x, str) for x in lines)
        or len(lines) != len(indices)
    ):
        raise AuditVerificationError("bundle.audit.lines must be the lines of the listed entries")
    if not isinstance(proofs, list) or len(proofs) != len(indices):
        raise AuditVerificationError("bundle.audit.proofs must give one proof (or null) per line")
    entries: list[dict[str, Any]] = [{}] * len(indices)
    for pos in range(len(indices) - 1, -1, -1):
        i = indices[pos]
        entry = audit_core.check_entry_line(lines[pos], index=i, deployment=deployment)
        proof = proofs[pos]
        if pos + 1 < len(indices) and indices[pos + 1] == i + 1:
            # The next entry is in the tree, and names this one's hash as its prev.
            if proof is not None:
                raise AuditVerificationError(f"entry {i}: a proof is given where the chain suffices", index=i)
            if entries[pos + 1]["prev"] != entry["hash"]:
                raise AuditVerificationError(
                    f"entry {i + 1}: prev does not match the hash of entry {i}", index=i
                )
        else:
            if not isinstance(proof, list) or not all(isinstance(p, str) for p in proof):
                raise AuditVerificationError(f"entry {i}: no inclusion proof", index=i)
            try:
                nodes = [bytes.fromhex(p) for p in proof]
                merkle.verify_inclusion_for_hash(
                    merkle.leaf_hash(bytes.fromhex(entry["hash"])), i, tree_size, nodes, root
                )
            except (ValueError, VerificationError) as exc:
                raise AuditVerificationError(f"entry {i}: not in the signed tree: {exc}", index=i) from None
        entries[pos] = entry
    if entries[-1]["hash"] != checkpoint["last_hash"]:
        raise AuditVerificationError(
            f"entry {tree_size - 1}: hash differs from the checkpoint's last_hash", index=tree_size - 1
        )
    if entries[0]["prev"] != audit_core.GENESIS_PREV:
        raise AuditVerificationError("entry 0: prev is not the genesis value", index=0)
    return SparseLog(
        index=index, entries=entries, tree_size=tree_size, by_index={e["index"]: e for e in entries}
    )


def _policy_from_log(state: LogState, *, at: int, before: int) -> Policy:
    """The policy in force at ``at``, as the justified replay of the log rebuilt it: only
    versions that follow from a manager's signed proposal and a custodian's signed
    approval (or from the genesis every initial member signed) count."""
    try:
        return state.policy_at(at, before=before)
    except VerificationError:
        raise VerificationError("no policy was in force when the withdrawal was requested") from None


def _book_from_log(state: LogState, *, at: int, before: int) -> list[AddressBookEntry]:
    """The address book in force at ``at``, from the justified replay (never from the
    server's ``addressbook.change_approved`` data alone)."""
    return state.book_at(at, before=before)


def _escalated_required(
    required: Mapping[Role, int], entries: Iterable[Mapping[str, Any]], withdrawal_id: str
) -> dict[Role, int]:
    """The quorum raised by every escalation the server recorded at a release attempt
    (``withdrawal.escalated``). The entry is the server's, not a member's: it can only
    make the offline signer ask for more, never for less."""
    out = dict(required)
    for e in entries:
        if e["kind"] != "withdrawal.escalated" or e["data"].get("withdrawal") != withdrawal_id:
            continue
        raised = e["data"].get("required")
        if not isinstance(raised, dict):
            raise VerificationError("a withdrawal.escalated entry names no required approvals")
        for name, n in raised.items():
            if not isinstance(name, str) or isinstance(n, bool) or not isinstance(n, int):
                raise VerificationError("a withdrawal.escalated entry has a malformed requirement")
            role = parse_role(name)
            out[role] = max(out.get(role, 0), n)
    return out


def _logged_action(env: Any, logged: Collection[bytes], *, type_: str, deployment: str) -> SignedAction:
    """An action from the bundle that the log holds verbatim. The membership replay
    checked its signature against the key its signer had at that point of the log, so
    a later rekey does not invalidate it, and a forged action is not in the log."""
    action = parse_envelope(env)
    if action.type != type_:
        raise VerificationError(f"expected a {type_} action, found {action.type}")
    if action.deployment != deployment:
        raise VerificationError("an action in the bundle was signed for another deployment")
    if canonical(env) not in logged:
        raise VerificationError(f"the {type_} action by {action.actor} is not in the log")
    return action


def verify_bundle(bundle: Any, *, now: int, genesis_hash_pin: str | None = None) -> VerifiedBundle:  # noqa: C901, PLR0912, PLR0915 - to be split into named steps
    """Everything the offline signer checks before it will sign, from the bundle alone.

    1. genesis: its members' signatures; its hash against ``genesis_hash_pin`` if given;
    2. the audit log selection (ADR 0011): checkpoint and index signed by the genesis
       service key, each entry in the signed tree (chain link or inclusion proof), every
       replayed kind present, and every action in it re-verified against the membership
       in force at that point;
    3. the create action and every approval: signatures, types, the request, and that the
       log holds each of them (the server accepted them, TOTP included);
    4. the policy (rebuilt from the log) and its decision, re-run on the intent;
    5. quorum of current members, approvals unexpired, not time-locked, not expired;
    6. the transaction: decoded and compared with the intent, rebuilt from it byte for
       byte, and both digests recomputed and equal to what was approved.
    """
    check_fields(
        bundle,
        required=(
            "format",
            "genesis",
            "genesis_signatures",
            "audit",
            "withdrawal",
            "actions",
            "keyset",
            "signer",
            "shares",
            "policy",
        ),
        where="bundle",
    )
    if bundle["format"] != BUNDLE_FORMAT:
        raise VerificationError(f"not a {BUNDLE_FORMAT} bundle")
    genesis = bundle["genesis"]
    check_genesis(genesis, bundle["genesis_signatures"])
    root = genesis_hash(genesis)
    if genesis_hash_pin is not None and root != genesis_hash_pin:
        raise VerificationError(f"genesis hash {root} is not the pinned {genesis_hash_pin}")
    deployment = genesis["deployment"]
    service_public = bytes.fromhex(genesis["service"]["sign_public"])

    sparse = verify_sparse_log(bundle["audit"], deployment=deployment, service_public=service_public)
    entries = sparse.entries
    tree_size = sparse.tree_size
    if entries[0]["kind"] != "deployment.genesis" or entries[0]["data"]["genesis"] != genesis:
        raise VerificationError("the log does not start with this genesis")
    # Every effect on members, policy and address book is recomputed from the member-
    # signed proposals and approvals in the log; the server's word for it counts for
    # nothing (THREATS 26).
    replay = LogState(genesis_hash_pin=root)
    for e in entries:
        replay.observe_entry(e)
    members = replay.members
    eligible = {m.id: m.role for m in members.values() if m.active}
    logged = {canonical(e["envelope"]) for e in entries if e["outcome"] == "ok" and e["envelope"] is not None}

    w = bundle["withdrawal"]
    check_fields(
        w,
        required=(
            "id",
            "wallet",
            "key_id",
            "chain",
            "network",
            "requester",
            "intent",
            "intent_hash",
            "unsigned_tx",
            "prevouts",
            "public_key",
            "tx_digest",
            "decision",
            "policy_version",
            "created_at",
            "expires_at",
            "time_lock_until",
        ),
        where="bundle.withdrawal",
    )
    intent = require_normal_intent(w["intent"])
    ih = intent_hash(w["intent"])
    if ih != w["intent_hash"]:
        raise VerificationError("the intent hash does not match the intent")
    td = tx_digest(
        chain=intent.chain,
        network=intent.network,
        public_key=w["public_key"],
        unsigned_tx=w["unsigned_tx"],
        prevouts=w["prevouts"],
    )
    if td != w["tx_digest"]:
        raise VerificationError("the transaction digest does not match the transaction")
    if (intent.wallet, intent.chain, intent.network) != (w["wallet"], w["chain"], w["network"]):
        raise VerificationError("the withdrawal record disagrees with its intent")

    # The create action, and where the log recorded it.
    actions = check_fields(bundle["actions"], required=("create", "approvals"), where="bundle.actions")
    create = _logged_action(actions["create"], logged, type_="withdrawal.create", deployment=deployment)
    if create.actor != w["requester"] or dict(create.body).get("intent") != w["intent"]:
        raise VerificationError("the create action is not this request by its requester")
    created_at = [
        e["index"]
        for e in entries
        if e["kind"] == "withdrawal.created" and e["outcome"] == "ok" and e["data"]["withdrawal"] == w["id"]
    ]
    if len(created_at) != 1 or sparse.by_index[created_at[0]]["envelope"] != actions["create"]:
        raise VerificationError("the log does not record this create action for this request")
    index = created_at[0]
    created = sparse.by_index[index]
    # The bundle's selection is this request's (its entries from its creation on) and
    # covers the history its velocity limits look at.
    selection = sparse.index
    if selection["withdrawal"] != w["id"] or selection["tail_from"] > index:
        raise VerificationError("the bundle's entries are selected for another request")
    if created["data"]["intent_hash"] != ih or created["data"]["tx_digest"] != td:
        raise VerificationError("the log recorded other digests for this request")
    if created["time"] != w["created_at"]:
        raise VerificationError("the request's creation time differs from the log")

    # Policy and decision, re-run as of the request.
    policy = _policy_from_log(replay, at=created["time"], before=index)
    check_fields(
        bundle["policy"],
        required=("version", "change_delay_seconds", "rules"),
        optional=("wallet_limits", "membership"),
        where="bundle.policy",
    )
    if parse_policy(bundle["policy"]) != policy or policy.version != w["policy_version"]:
        raise VerificationError("the bundle's policy is not the policy in force when the request was made")

    # The transaction itself: decoded first, since its worst-case fee is a policy fact.
    keyset = split.SealedKeyset.from_dict(bundle["keyset"])
    key = keyset.key(w["key_id"])
    if keyset.keyset_id != w["wallet"] or key.public_key.hex() != w["public_key"]:
        raise VerificationError("the key set in the bundle is not the wallet's")
    view = check_transaction(
        intent, public_key=key.public_key, unsigned=bytes.fromhex(w["unsigned_tx"]), prevouts=w["prevouts"]
    )

    history = selection["history"]
    if (
        history["wallet"] != intent.wallet
        or history["before"] != index
        or history["since"] > max(0, created["time"] - velocity_window_seconds(policy))
    ):
        raise VerificationError("the bundle's history does not cover the window the policy's limits look at")
    book = _book_from_log(replay, at=created["time"], before=index)
    decision = evaluate(
        policy,
        intent.facts(fee_of(intent, view)),
        now=created["time"],
        address_book=book,
        history=_history_from_log(entries, before=index, now=created["time"]),
    )
    decision.require()
    mine, theirs = decision.to_json(), dict(w["decision"])
    mine.pop("explanation")
    theirs.pop("explanation", None)
    if mine != theirs:
        raise VerificationError("the server's decision differs from the policy re-run offline")
    if decision.request_expires_at != w["expires_at"] or decision.time_lock_until != w["time_lock_until"]:
        raise VerificationError("the request's expiry or time lock differs from the policy decision")
    if now >= w["expires_at"]:
        raise ExpiredError(f"the request expired at {w['expires_at']}")
    if w["time_lock_until"] is not None and now < w["time_lock_until"]:
        raise TimeLockedError(f"time-locked until {w['time_lock_until']}")
    if any(e["kind"] == "withdrawal.vetoed" and e["data"].get("withdrawal") == w["id"] for e in entries):
        raise VerificationError("the log records a veto of this request")
    required = _escalated_required(decision.required, entries, w["id"])
    # The destination must still be allowed as of the end of the log, not only when the
    # request was made (THREATS 31).
    matched = next((r for r in policy.rules if r.name == decision.rule_name), None)
    if matched is not None and matched.allowlist_only:
        facts = intent.facts()
        if not any(e.allows(facts) for e in _book_from_log(replay, at=now, before=tree_size)):
            raise VerificationError(f"destination {intent.destination} has left the address book")

    # Approvals: signed, recorded, for exactly this content, counted per current member
    # by the same engine the server counts with.
    if not isinstance(actions["approvals"], list):
        raise VerificationError("bundle.actions.approvals must be a list")
    logged_at: dict[bytes, int] = {}
    for e in entries:
        if e["outcome"] == "ok" and e["envelope"] is not None:
            logged_at.setdefault(canonical(e["envelope"]), e["time"])
    given: list[approvals_engine.Given] = []
    for env in actions["approvals"]:
        action = _logged_action(env, logged, type_="withdrawal.approve", deployment=deployment)
        body = parse_approval(action.body)
        if body["withdrawal"] != w["id"] or body["intent_hash"] != ih or body["tx_digest"] != td:
            raise VerificationError(f"approval by {action.actor} is for other content")
        given.append(
            approvals_engine.Given(
                member=action.actor,
                role=members[action.actor].role,
                at=logged_at[canonical(env)],
                digest=body["tx_digest"],
                policy_version=body["policy_version"],
                expires_at=body["expires_at"],
            )
        )
    result = approvals_engine.evaluate(
        approvals_engine.Request(
            requester=w["requester"],
            kind="withdrawal",
            digest=td,
            policy_version=policy.version,
            created_at=w["created_at"],
        ),
        given,
        membership=approvals_engine.standing_by_role(eligible),
        required=required,
        now=now,
        ttl_seconds=decision.approval_ttl_seconds,
    )
    result.require()
    approvers = result.counted
    return VerifiedBundle(
        withdrawal=w, intent=intent, view=view, decision=decision, approvers=approvers, members=eligible
    )


def offline_sign(
    bundle: Any, seal_private: bytes | bytearray, *, now: int, genesis_hash_pin: str | None = None
) -> dict[str, Any]:
    """Verify the bundle, open both shares resealed to this signer, sign, and return the
    result document for ``tandem bundle import``. Nothing is signed if any check fails."""
    verified = verify_bundle(bundle, now=now, genesis_hash_pin=genesis_hash_pin)
    w = verified.withdrawal
    card = IdentityCard.from_json(bundle["signer"])
    op_private = bytes(seal_private)
    op_key = split.OperationKey(randbytes=lambda n: op_private)
    if op_key.public_key != card.seal_public:
        op_key.close()
        raise VerificationError("this signer key is not the one the bundle's shares were sealed to")
    shares = check_fields(bundle["shares"], required=("manager", "custodian"), where="bundle.shares")
    keyset = split.SealedKeyset.from_dict(bundle["keyset"])
    key = keyset.key(w["key_id"])
    sealed = {}
    for side in split.SIDES:
        doc = check_fields(shares[side], required=("member", "sealed"), where=f"bundle.shares.{side}")
        if doc["member"] not in keyset.members(side):
            raise VerificationError(f"the {side} share names someone who holds no {side} share")
        sealed[side] = unb64(doc["sealed"], what=f"{side} share")
    with split.open_operation_shares(
        op_key,
        keyset_id=keyset.keyset_id,
        operation_id=offline_operation_id(w["id"]),
        sealed_manager=sealed["manager"],
        sealed_custodian=sealed["custodian"],
        commitments=keyset.commitments,
        dek_check=keyset.dek_check,
    ) as dek:
        private = split.decrypt_private_key(
            dek, keyset_id=keyset.keyset_id, key_id=key.key_id, public_key=key.public_key, blob=key.ciphertext
        )
        try:
            signed, txid = sign_transaction(
                w["chain"], bytes.fromhex(w["unsigned_tx"]), w["prevouts"], bytes(private)
            )
        finally:
            split.wipe(private)
    check_signed_transaction(
        w["chain"],
        signed,
        unsigned=bytes.fromhex(w["unsigned_tx"]),
        prevouts=w["prevouts"],
        from_address=verified.intent.from_address,
    )
    return {
        "format": RESULT_FORMAT,
        "withdrawal": w["id"],
        "intent_hash": w["intent_hash"],
        "tx_digest": w["tx_digest"],
        "signed_tx": signed.hex(),
        "txid": txid,
    }
