"""The intent: what a manager asks for, strictly parsed per chain, normalised, hashed
and fingerprinted."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from tandem.core.canonical import (
    check_fields,
    digest_hex,
    parse_amount,
)
from tandem.core.chains import CHAINS, NATIVE_ASSET
from tandem.core.chains import bitcoin as btc
from tandem.core.chains import ethereum as eth
from tandem.core.chains import psbt as bip174
from tandem.core.chains import solana as sol
from tandem.core.chains import solana_tx as stx
from tandem.core.chains.bitcoin import BitcoinIntent, Utxo
from tandem.core.chains.ethereum import EthereumIntent, EthParams
from tandem.core.chains.solana_tx import SolanaIntent, SolParams
from tandem.core.policy import (
    Fee,
    WithdrawalFacts,
)
from tandem.errors import (
    InputError,
    InvalidTransactionError,
)

INTENT_DOMAIN = "withdrawal-intent"
MAX_UTXOS = 200
# The previous transactions an intent carries, together; leaves room in a 1 MiB request.
MAX_PREV_TX_TOTAL_BYTES = 300_000

_IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9:._-]{0,79}")
_TXID = re.compile(r"[0-9a-fA-F]{64}")
_HEX = re.compile(r"[0-9a-fA-F]*")

# Every chain and its networks, from the chain registry.
NETWORKS: Mapping[str, Collection[str]] = MappingProxyType({c.name: c.networks for c in CHAINS.values()})


# --- the intent ------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Intent:
    """A withdrawal as asked for, parsed; what each chain's transactions read of it is that
    chain's ``*Intent`` protocol (see the check below the class)."""

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
        return CHAINS[self.chain].tx.token(self.asset)

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
        out[self.chain] = _CHAIN_PARAMS[self.chain].section(self)
        return out


if TYPE_CHECKING:

    def _read_by_every_chain(intent: Intent) -> tuple[BitcoinIntent, EthereumIntent, SolanaIntent]:
        """For the type checker: an Intent is what every chain's transactions read."""
        return intent, intent, intent


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
    return CHAINS[chain].validate_address(value, network)


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


@dataclass(frozen=True)
class _Fields:
    """The fields every intent has, parsed; a chain's parser adds its parameters."""

    wallet: str
    client: str | None
    from_address: str
    network: str
    asset: str
    amount: int
    destination: str

    def intent(
        self,
        chain: str,
        *,
        asset: str | None = None,
        utxos: tuple[Utxo, ...] = (),
        fee_rate: int | None = None,
        eth: EthParams | None = None,
        sol: SolParams | None = None,
    ) -> Intent:
        return Intent(
            wallet=self.wallet,
            from_address=self.from_address,
            chain=chain,
            network=self.network,
            asset=self.asset if asset is None else asset,
            amount=self.amount,
            destination=self.destination,
            client=self.client,
            utxos=utxos,
            fee_rate=fee_rate,
            eth=eth,
            sol=sol,
        )


def parse_intent(doc: Any) -> Intent:
    """Strictly parse and normalise an intent; see docs/withdrawals.md for the fields.

    The fields every intent has first, then the chain's own parameters (``intent.<chain>``)
    by that chain's parser."""
    chain, fields = _common_fields(doc)
    return _CHAIN_PARAMS[chain].parse(doc[chain], fields)


def _common_fields(doc: Any) -> tuple[str, _Fields]:
    """The chain an intent is on, and the fields every intent has."""
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
    networks = NETWORKS[chain]
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
    return chain, _Fields(wallet, client, from_address, network, asset, amount, destination)


def _bitcoin_intent(raw: Any, f: _Fields) -> Intent:
    """``intent.bitcoin``: the outputs to spend (as utxos or a PSBT) and the fee rate."""
    if f.asset != "BTC":
        raise InputError("intent.asset must be BTC on bitcoin")
    params = check_fields(raw, required=("fee_rate",), optional=("utxos", "psbt"), where="intent.bitcoin")
    if ("utxos" in params) == ("psbt" in params):
        raise InputError("intent.bitcoin gives its inputs as either utxos or a psbt (exactly one)")
    if "psbt" in params:
        utxos = _utxos_from_psbt(params["psbt"], f.destination, f.amount, f.from_address, f.network)
    else:
        utxos = _utxos_from_json(params["utxos"])
    _check_utxos(utxos, f.from_address, f.network)
    fee_rate = _int(params, "fee_rate", "intent.bitcoin", low=1, high=btc.MAX_FEE_RATE)
    return f.intent("bitcoin", utxos=tuple(utxos), fee_rate=fee_rate)


def _ethereum_intent(raw: Any, f: _Fields) -> Intent:
    """``intent.ethereum``: chain id, nonce, EIP-1559 fees and the gas limit."""
    asset = f.asset
    if asset != "ETH":
        if not eth.EVM_ADDRESS.fullmatch(asset):
            raise InputError("intent.asset must be ETH or an ERC-20 contract address (0x + 40 hex)")
        asset = eth.validate_address(asset)
    w = "intent.ethereum"
    params = check_fields(
        raw,
        required=("chain_id", "nonce", "max_fee_per_gas", "max_priority_fee_per_gas", "gas_limit"),
        where=w,
    )
    chain_id = _int(params, "chain_id", w, low=1, high=(1 << 53) - 1)
    if chain_id != eth.CHAIN_IDS[f.network]:
        raise InputError(f"{w}.chain_id {chain_id} is not {f.network} ({eth.CHAIN_IDS[f.network]})")
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
    return f.intent("ethereum", asset=asset, eth=eth_params)


def _solana_intent(raw: Any, f: _Fields) -> Intent:
    """``intent.solana``: the blockhash (or durable nonce), for a token its mint's
    parameters, and an optional priority fee."""
    w = "intent.solana"
    asset = f.asset
    decimals: int | None = None
    create, program = False, None
    if asset != "SOL":
        try:
            asset = sol.validate_address(asset)
        except InputError:
            raise InputError("intent.asset must be SOL or an SPL token mint address (base58)") from None
        params = check_fields(
            raw,
            required=("recent_blockhash", "decimals", "create_destination_account"),
            optional=("nonce_account", "token_program", *_PRIORITY),
            where=w,
        )
        decimals, create, program = _solana_token_params(params)
    else:
        params = check_fields(
            raw, required=("recent_blockhash",), optional=("nonce_account", *_PRIORITY), where=w
        )
    if f.amount > (1 << 64) - 1:
        raise InputError("intent.amount is more than a Solana transfer can carry (64 bits)")
    if not isinstance(params["recent_blockhash"], str):
        raise InputError(f"{w}.recent_blockhash must be base58 text")
    limit, price = _solana_priority_fee(params)
    sol_params = SolParams(
        recent_blockhash=stx.validate_blockhash(params["recent_blockhash"]),
        nonce_account=_solana_nonce_account(params, f),
        decimals=decimals,
        create_destination_account=create,
        compute_unit_limit=limit,
        compute_unit_price=price,
        token_program=program,
    )
    return f.intent("solana", asset=asset, sol=sol_params)


def _solana_token_params(params: Mapping[str, Any]) -> tuple[int, bool, str | None]:
    """A token transfer's decimals, whether it creates the destination's token account,
    and its token program (named only for Token-2022)."""
    w = "intent.solana"
    if not isinstance(params["create_destination_account"], bool):
        raise InputError(f"{w}.create_destination_account must be true or false")
    decimals = _int(params, "decimals", w, low=0, high=255)
    program = params.get("token_program")
    if program is not None and program != stx.TOKEN_2022_PROGRAM:
        # One spelling: SPL Token is the default and is not named.
        raise InputError(f"{w}.token_program is named only for a Token-2022 mint ({stx.TOKEN_2022_PROGRAM})")
    return decimals, params["create_destination_account"], program


def _solana_nonce_account(params: Mapping[str, Any], f: _Fields) -> str | None:
    """The durable nonce account, when the message names one: never the payer or the payee."""
    w = "intent.solana"
    nonce = params.get("nonce_account")
    if nonce is not None:
        nonce = _address("solana", f.network, nonce, f"{w}.nonce_account")
        if nonce in (f.from_address, f.destination):
            raise InputError(f"{w}.nonce_account must be an account of its own")
    return nonce


def _solana_priority_fee(params: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """The compute-unit limit and price of a priority fee: both or neither."""
    w = "intent.solana"
    if ("compute_unit_limit" in params) != ("compute_unit_price" in params):
        raise InputError(f"{w}: a priority fee names compute_unit_price and compute_unit_limit together")
    if "compute_unit_price" not in params:
        return None, None
    return (
        _int(params, "compute_unit_limit", w, low=1, high=stx.MAX_COMPUTE_UNIT_LIMIT),
        _int(params, "compute_unit_price", w, low=1, high=stx.MAX_COMPUTE_UNIT_PRICE),
    )


def _bitcoin_section(intent: Intent) -> dict[str, Any]:
    return {
        "utxos": [{"txid": u.txid, "vout": u.vout, "prev_tx": u.prev_tx.hex()} for u in intent.utxos],
        "fee_rate": intent.fee_rate,
    }


def _ethereum_section(intent: Intent) -> dict[str, Any]:
    e = intent.eth
    if e is None:
        raise InputError("an ethereum intent carries its chain parameters")
    return {
        "chain_id": e.chain_id,
        "nonce": e.nonce,
        "max_fee_per_gas": str(e.max_fee_per_gas),
        "max_priority_fee_per_gas": str(e.max_priority_fee_per_gas),
        "gas_limit": e.gas_limit,
    }


def _solana_section(intent: Intent) -> dict[str, Any]:
    p = intent.sol
    if p is None:
        raise InputError("a solana intent carries its chain parameters")
    params: dict[str, Any] = {"recent_blockhash": p.recent_blockhash}
    if p.nonce_account is not None:
        params["nonce_account"] = p.nonce_account
    if intent.token is not None:
        params["decimals"] = p.decimals
        params["create_destination_account"] = p.create_destination_account
        if p.token_program is not None:
            params["token_program"] = p.token_program
    if p.compute_unit_price is not None:
        params["compute_unit_limit"] = p.compute_unit_limit
        params["compute_unit_price"] = p.compute_unit_price
    return params


@dataclass(frozen=True)
class _ChainParams:
    """``intent.<chain>``: read by ``parse``, written back in its one spelling by ``section``."""

    parse: Callable[[Any, _Fields], Intent]
    section: Callable[[Intent], dict[str, Any]]


# Each chain's parameters, parsed and written by its own pair: one per chain of the registry.
_CHAIN_PARAMS: Mapping[str, _ChainParams] = {
    "bitcoin": _ChainParams(_bitcoin_intent, _bitcoin_section),
    "ethereum": _ChainParams(_ethereum_intent, _ethereum_section),
    "solana": _ChainParams(_solana_intent, _solana_section),
}


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
