"""Offline UTXO snapshots: cold storage reconciled from an air-gapped machine.

An operator exports the UTXOs of cold addresses on a machine that has a node, carries
the file across, and Tandem reads it here with no network at all. Three shapes are read:

* an Esplora ``GET /address/:address/utxo`` answer, wrapped as
  ``{"address": ..., "utxos": [...], "transactions": {txid: raw hex}}``, or a bare array
  whose entries each name their ``address`` (and may carry ``raw_tx``);
* Bitcoin Core ``scantxoutset`` output as it prints it, optionally with the same
  ``"transactions"`` object added;
* CSV with the header ``txid,vout,value,address[,raw_tx]`` (value in sats).

A snapshot entry becomes a :class:`~tandem.chainio.base.Utxo` only with its previous
transaction, checked exactly as an online backend's (txid, output, script, amount):
the file is no more trusted than a node.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import unquote, urlparse

from tandem.chainio import parse
from tandem.chainio.base import Balance, BitcoinFeeRate, TxStatus, Utxo
from tandem.chainio.bitcoin import checked_transaction, checked_utxo
from tandem.core.chains import bitcoin as btc
from tandem.errors import ChainBadResponseError, ChainConfigError, ChainUnsupportedError, InvalidAddressError

if TYPE_CHECKING:
    import httpx

    from tandem.chainio.endpoint import ChainEndpoint

MAX_SNAPSHOT_BYTES = 64 * 1024 * 1024
_CSV_HEADER = ("txid", "vout", "value", "address")
_ESPLORA_KEYS = frozenset({"txid", "vout", "value", "status", "address", "raw_tx"})
_WHAT = "UTXO snapshot"


@dataclass(frozen=True)
class SnapshotEntry:
    txid: str
    vout: int
    amount: int  # sats, as the snapshot states it (checked against raw_tx when used)
    address: str
    raw_tx: bytes | None = field(default=None, repr=False)
    block_height: int | None = None


@dataclass(frozen=True)
class UtxoSnapshot:
    network: str
    entries: tuple[SnapshotEntry, ...]
    height: int | None = None  # scantxoutset says which height it scanned at

    def utxos(self, address: str | None = None) -> tuple[Utxo, ...]:
        """Checked UTXOs (of one address, or all); an entry without its transaction is refused."""
        out = []
        for entry in self.entries:
            if address is not None and entry.address != address:
                continue
            if entry.raw_tx is None:
                raise ChainBadResponseError(
                    f"{_WHAT}: {entry.txid}:{entry.vout} comes without its previous transaction; "
                    "export the snapshot with raw transactions"
                )
            out.append(
                checked_utxo(
                    txid=entry.txid,
                    vout=entry.vout,
                    raw_tx=entry.raw_tx,
                    address=entry.address,
                    network=self.network,
                    claimed_amount=entry.amount,
                    block_height=entry.block_height,
                    what=_WHAT,
                )
            )
        return tuple(out)


def _address(value: Any, network: str) -> str:
    text = parse.string(value, _WHAT)
    try:
        return btc.validate_address(text, network)
    except InvalidAddressError as exc:
        raise ChainBadResponseError(f"{_WHAT}: {exc.message}") from None


def _transactions(value: Any) -> dict[str, bytes]:
    if value is None:
        return {}
    return {
        parse.txid(txid, _WHAT): parse.hex_bytes(raw, _WHAT) for txid, raw in parse.obj(value, _WHAT).items()
    }


def _finish(
    network: str, entries: Sequence[SnapshotEntry], raws: Mapping[str, bytes], height: int | None
) -> UtxoSnapshot:
    seen: set[tuple[str, int]] = set()
    done = []
    for entry in entries:
        if (entry.txid, entry.vout) in seen:
            raise ChainBadResponseError(f"{_WHAT}: {entry.txid}:{entry.vout} is listed twice")
        seen.add((entry.txid, entry.vout))
        raw = entry.raw_tx if entry.raw_tx is not None else raws.get(entry.txid)
        if raw is not None:
            checked_transaction(raw, entry.txid, _WHAT)
        done.append(
            SnapshotEntry(entry.txid, entry.vout, entry.amount, entry.address, raw, entry.block_height)
        )
    return UtxoSnapshot(network, tuple(done), height)


def _esplora_entry(item: Any, network: str, address: str | None) -> SnapshotEntry:
    entry = parse.obj(item, _WHAT)
    unknown = set(entry) - _ESPLORA_KEYS
    if unknown:
        parse.bad(_WHAT, f"unknown fields {sorted(unknown)}")
    named = entry.get("address")
    if named is None and address is None:
        parse.bad(_WHAT, "entry names no address")
    owner = _address(named if named is not None else address, network)
    if address is not None and owner != address:
        parse.bad(_WHAT, "entry names another address than its snapshot")
    height = None
    status = entry.get("status")
    if status is not None:
        status_obj = parse.obj(status, _WHAT)
        if parse.boolean(parse.field(status_obj, "confirmed", _WHAT), _WHAT):
            height = parse.integer(parse.field(status_obj, "block_height", _WHAT), _WHAT)
    raw = entry.get("raw_tx")
    return SnapshotEntry(
        txid=parse.txid(parse.field(entry, "txid", _WHAT), _WHAT),
        vout=parse.integer(parse.field(entry, "vout", _WHAT), _WHAT, maximum=0xFFFFFFFF),
        amount=parse.integer(parse.field(entry, "value", _WHAT), _WHAT, maximum=btc.MAX_MONEY),
        address=owner,
        raw_tx=None if raw is None else parse.hex_bytes(raw, _WHAT),
        block_height=height,
    )


def from_esplora_json(
    text: str | bytes,
    *,
    network: str,
    address: str | None = None,
    transactions: Mapping[str, str] | None = None,
) -> UtxoSnapshot:
    """An Esplora UTXO list (bare, or wrapped with its address and transactions)."""
    doc = parse.loads(text.encode("utf-8") if isinstance(text, str) else text, _WHAT)
    raws = _transactions(transactions)
    if isinstance(doc, dict):
        if set(doc) - {"address", "utxos", "transactions"}:
            parse.bad(_WHAT, f"unknown fields {sorted(set(doc) - {'address', 'utxos', 'transactions'})}")
        address = _address(parse.field(doc, "address", _WHAT), network)
        raws.update(_transactions(doc.get("transactions")))
        items = parse.arr(parse.field(doc, "utxos", _WHAT), _WHAT)
    else:
        items = parse.arr(doc, _WHAT)
        if address is not None:
            address = _address(address, network)
    return _finish(network, [_esplora_entry(i, network, address) for i in items], raws, None)


def from_scantxoutset_json(
    text: str | bytes, *, network: str, transactions: Mapping[str, str] | None = None
) -> UtxoSnapshot:
    """Bitcoin Core ``scantxoutset start [...]`` output; amounts in BTC convert exactly."""
    doc = parse.obj(parse.loads(text.encode("utf-8") if isinstance(text, str) else text, _WHAT), _WHAT)
    if doc.get("success") is not True:
        parse.bad(_WHAT, "scantxoutset did not report success")
    raws = _transactions(transactions)
    raws.update(_transactions(doc.get("transactions")))
    height = parse.integer(parse.field(doc, "height", _WHAT), _WHAT)
    entries = []
    for item in parse.arr(parse.field(doc, "unspents", _WHAT), _WHAT):
        entry = parse.obj(item, _WHAT)
        script = parse.hex_bytes(parse.field(entry, "scriptPubKey", _WHAT), _WHAT)
        address = btc.script_to_address(script, network)
        if address is None:
            parse.bad(_WHAT, "unspent pays a script with no standard address")
        entries.append(
            SnapshotEntry(
                txid=parse.txid(parse.field(entry, "txid", _WHAT), _WHAT),
                vout=parse.integer(parse.field(entry, "vout", _WHAT), _WHAT, maximum=0xFFFFFFFF),
                amount=parse.btc_to_sats(parse.field(entry, "amount", _WHAT), _WHAT),
                address=address,
                block_height=parse.integer(parse.field(entry, "height", _WHAT), _WHAT),
            )
        )
    return _finish(network, entries, raws, height)


def from_csv(text: str, *, network: str) -> UtxoSnapshot:
    """``txid,vout,value,address[,raw_tx]`` with that header; value in whole sats."""
    rows = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        parse.bad(_WHAT, "CSV is empty")
    header = tuple(cell.strip().lower() for cell in rows[0])
    with_raw = header == (*_CSV_HEADER, "raw_tx")
    if header != _CSV_HEADER and not with_raw:
        parse.bad(_WHAT, "CSV header must be txid,vout,value,address[,raw_tx]")
    entries = []
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            parse.bad(_WHAT, f"CSV line {number} has {len(row)} fields, not {len(header)}")
        cells = [cell.strip() for cell in row]
        raw = parse.hex_bytes(cells[4], _WHAT) if with_raw and cells[4] else None
        entries.append(
            SnapshotEntry(
                txid=parse.txid(cells[0], _WHAT),
                vout=parse.text_integer(cells[1].encode("ascii", "replace"), f"{_WHAT} line {number} vout"),
                amount=parse.text_integer(
                    cells[2].encode("ascii", "replace"), f"{_WHAT} line {number} value"
                ),
                address=_address(cells[3], network),
                raw_tx=raw,
            )
        )
    for entry in entries:
        if entry.vout > 0xFFFFFFFF or entry.amount > btc.MAX_MONEY:
            parse.bad(_WHAT, f"{entry.txid}:{entry.vout} has a vout or value out of range")
    return _finish(network, entries, {}, None)


def load_snapshot(path: Path, *, network: str) -> UtxoSnapshot:
    """Read a snapshot file, telling its shape from its name (.csv) or its JSON."""
    try:
        size = path.stat().st_size
        if size > MAX_SNAPSHOT_BYTES:
            parse.bad(_WHAT, f"file is larger than {MAX_SNAPSHOT_BYTES} bytes")
        body = path.read_bytes()
    except OSError as exc:
        raise ChainConfigError(f"{_WHAT}: cannot read the snapshot file ({exc.strerror})") from None
    if path.suffix.lower() == ".csv":
        try:
            return from_csv(body.decode("utf-8"), network=network)
        except UnicodeDecodeError:
            parse.bad(_WHAT, "CSV is not UTF-8")
    doc = parse.loads(body, _WHAT)
    if isinstance(doc, dict) and "unspents" in doc:
        return from_scantxoutset_json(body, network=network)
    return from_esplora_json(body, network=network)


class SnapshotBackend:
    """A read-only backend over a snapshot file (``snapshot+file:///path``)."""

    chain: ClassVar[str] = "bitcoin"
    kind: ClassVar[str] = "snapshot"

    def __init__(self, endpoint: ChainEndpoint, transport: httpx.BaseTransport | None = None) -> None:
        del transport  # no network
        self.network = endpoint.network
        parsed = urlparse(endpoint.url)
        if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
            raise ChainConfigError("a snapshot endpoint is a file:///path URL")
        self.snapshot = load_snapshot(Path(unquote(parsed.path)), network=self.network)

    @classmethod
    def of(cls, snapshot: UtxoSnapshot) -> SnapshotBackend:
        backend = cls.__new__(cls)
        backend.network = snapshot.network
        backend.snapshot = snapshot
        return backend

    def close(self) -> None:
        return None

    def _offline(self, what: str) -> ChainUnsupportedError:
        return ChainUnsupportedError(f"{what}: an offline UTXO snapshot cannot answer this")

    def tip_height(self) -> int:
        if self.snapshot.height is None:
            raise self._offline("tip height")
        return self.snapshot.height

    def utxos(self, address: str) -> tuple[Utxo, ...]:
        return self.snapshot.utxos(btc.validate_address(address, self.network))

    def balance(self, address: str) -> Balance:
        normalised = btc.validate_address(address, self.network)
        total = sum(u.amount for u in self.snapshot.utxos(normalised))
        return Balance("bitcoin", self.network, normalised, total, self.snapshot.height)

    def raw_transaction(self, txid: str) -> bytes:
        wanted = parse.txid(txid, "txid")
        for entry in self.snapshot.entries:
            if entry.txid == wanted and entry.raw_tx is not None:
                return entry.raw_tx
        raise ChainBadResponseError(f"{_WHAT}: holds no transaction {wanted}")

    def transaction_status(self, txid: str) -> TxStatus:
        raise self._offline("transaction status")

    def suggest_fee_rate(self, target_blocks: int = 6) -> BitcoinFeeRate:
        raise self._offline("fee estimate")

    def broadcast(self, raw: bytes) -> str:
        raise self._offline("broadcast")
