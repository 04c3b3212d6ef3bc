"""Statements of position: per client and period, the assets, opening and closing
balance, value, and every transfer with its txid and date, read from the register.

Values come from an imported price file, each price naming its source and method,
because a custodian must say how it valued the assets. Pure: the PDF is laid out by
``tandem.services.statement_pdf``, an adapter.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from tandem.core.canonical import check_fields, domain_bytes
from tandem.core.register import Movement, Register
from tandem.errors import InputError

_PERIOD = re.compile(r"(\d{4})-(Q[1-4]|\d{2})")
DECIMALS = {"ETH": 18, "BTC": 8, "SOL": 9}


@dataclass(frozen=True)
class Price:
    asset: str
    price: Decimal  # per whole unit of the asset
    currency: str
    time: int
    source: str
    method: str
    decimals: int

    def to_json(self) -> dict[str, Any]:
        return {
            "asset": self.asset,
            "price": str(self.price),
            "currency": self.currency,
            "time": self.time,
            "source": self.source,
            "method": self.method,
            "decimals": self.decimals,
        }


def parse_prices(raw: Any) -> list[Price]:
    """Prices as a list of objects (asset, price, currency, time, source, method[, decimals])."""
    if not isinstance(raw, list) or not raw or len(raw) > 10_000:
        raise InputError("prices is a list of 1-10000 entries")
    out = []
    for item in raw:
        p = check_fields(
            item,
            required=("asset", "price", "currency", "time", "source", "method"),
            optional=("decimals",),
            where="price",
        )
        try:
            value = Decimal(p["price"]) if isinstance(p["price"], str) else Decimal("NaN")
        except InvalidOperation:
            value = Decimal("NaN")
        if not value.is_finite() or value < 0:
            raise InputError("price.price is a non-negative decimal string")
        for name in ("asset", "currency", "source", "method"):
            if not isinstance(p[name], str) or not 0 < len(p[name]) <= 200:
                raise InputError(f"price.{name} is text")
        if isinstance(p["time"], bool) or not isinstance(p["time"], int):
            raise InputError("price.time is unix seconds")
        decimals = p.get("decimals", DECIMALS.get(p["asset"], 0))
        if isinstance(decimals, bool) or not isinstance(decimals, int) or not 0 <= decimals <= 36:
            raise InputError("price.decimals is 0-36")
        out.append(Price(p["asset"], value, p["currency"], p["time"], p["source"], p["method"], decimals))
    return out


def prices_from_csv(text: str) -> list[dict[str, Any]]:
    """A price file in CSV (header asset,price,currency,time,source,method[,decimals])."""
    rows = []
    for r in csv.DictReader(io.StringIO(text)):
        doc: dict[str, Any] = {k: (r[k] or "").strip() for k in r if k}
        doc["time"] = int(doc["time"]) if str(doc.get("time", "")).isdigit() else doc.get("time")
        if doc.get("decimals"):
            doc["decimals"] = int(doc["decimals"])
        else:
            doc.pop("decimals", None)
        rows.append(doc)
    return rows


def prices_hash(prices: Sequence[Price]) -> str:
    return hashlib.sha256(domain_bytes("price-file", [p.to_json() for p in prices])).hexdigest()


def parse_period(period: Any) -> tuple[int, int]:
    """``2026-Q3`` or ``2026-07`` -> [start, end) in unix seconds (UTC)."""
    m = _PERIOD.fullmatch(period) if isinstance(period, str) else None
    if m is None:
        raise InputError("period is YYYY-Qn or YYYY-MM")
    year, part = int(m.group(1)), m.group(2)
    if part.startswith("Q"):
        first, months = (int(part[1]) - 1) * 3 + 1, 3
    else:
        first, months = int(part), 1
        if not 1 <= first <= 12:
            raise InputError("month is 01-12")
    start = datetime(year, first, 1, tzinfo=UTC)
    last = first + months
    end = datetime(year + (last - 1) // 12, (last - 1) % 12 + 1, 1, tzinfo=UTC)
    return int(start.timestamp()), int(end.timestamp())


def _price_at(prices: Sequence[Price], asset: str, at: int) -> Price | None:
    known = [p for p in prices if p.asset == asset and p.time <= at]
    return max(known, key=lambda p: p.time) if known else None


def _date(ts: int) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def statement(  # noqa: PLR0913 - every figure a statement names
    reg: Register,
    client: str,
    *,
    start: int,
    end: int,
    period: str,
    prices: Sequence[Price],
    custodian: str,
    entity: str,
    movements: Sequence[Movement] | None = None,
) -> dict[str, Any]:
    """One client's statement of position for ``[start, end)``; ``movements``, when given,
    are the register's movements of that client (see :func:`by_client`)."""
    c = reg.clients[client]
    rows, transfers = _positions(reg.movements if movements is None else movements, client, start, end)
    assets = []
    valued_in: set[str] = set()
    for (chain, network, asset), r in sorted(rows.items()):
        price = _price_at(prices, asset, end - 1)
        if price is not None:
            valued_in.add(price.currency)
        assets.append(_asset_line(chain, network, asset, r, price))
    total = None
    if len(valued_in) == 1 and all(a["value"] is not None for a in assets):
        total = str(sum((Decimal(str(a["value"])) for a in assets), Decimal("0")))
    return {
        "version": 1,
        "custodian": custodian,
        "entity": entity,
        "client": {"id": c.id, "name": c.name, "segregation": c.segregation},
        "period": period,
        "start": start,
        "end": end,
        "assets": assets,
        "transfers": transfers,
        "total_value": total,
        "currency": next(iter(valued_in)) if len(valued_in) == 1 else None,
    }


_Row = dict[str, int]


def _positions(
    movements: Iterable[Movement], client: str, start: int, end: int
) -> tuple[dict[tuple[str, str, str], _Row], list[dict[str, Any]]]:
    """Per chain, network and asset: the client's balance before ``start`` (opening) and
    before ``end`` (closing), with the inflows and outflows between; and every transfer
    in ``[start, end)``, in the register's order."""
    rows: dict[tuple[str, str, str], _Row] = {}
    transfers = []
    for m in movements:
        if m.client != client:
            continue
        key = (m.chain, m.network, m.asset)
        row = rows.setdefault(key, {"opening": 0, "closing": 0, "in": 0, "out": 0})
        if m.time < start:
            row["opening"] += m.amount
        if m.time < end:
            row["closing"] += m.amount
        if start <= m.time < end:
            row["in" if m.amount > 0 else "out"] += m.amount
            transfers.append(
                {
                    "date": _date(m.time),
                    "time": m.time,
                    "type": m.type,
                    "chain": m.chain,
                    "network": m.network,
                    "asset": m.asset,
                    "amount": str(m.amount),
                    "txid": m.txid,
                    "height": m.height,
                    "address": m.address,
                }
            )
    return rows, transfers


def _asset_line(chain: str, network: str, asset: str, r: _Row, price: Price | None) -> dict[str, Any]:
    """One asset's line: its flows and closing balance, valued at the last price known
    at the end of the period when there is one."""
    value = None
    if price is not None:
        value = str(
            (Decimal(r["closing"]) / (Decimal(10) ** price.decimals) * price.price).quantize(Decimal("0.01"))
        )
    decimals = price.decimals if price is not None else DECIMALS.get(asset)
    return {
        "chain": chain,
        "network": network,
        "asset": asset,
        "opening": str(r["opening"]),
        "inflows": str(r["in"]),
        "outflows": str(r["out"]),
        "closing": str(r["closing"]),
        "decimals": decimals,
        "closing_units": units(r["closing"], decimals),
        "value": value,
        "currency": price.currency if price else None,
        "price": price.to_json() if price else None,
    }


def by_client(reg: Register) -> dict[str, list[Movement]]:
    """The register's movements grouped by client, in order: one pass for many statements."""
    out: dict[str, list[Movement]] = {}
    for m in reg.movements:
        out.setdefault(m.client, []).append(m)
    return out


def units(base: int, decimals: int | None) -> str | None:
    """Base units as whole units (``1500000000000000000``, 18 -> ``1.5``), when known."""
    if decimals is None:
        return None
    text = format(Decimal(base).scaleb(-decimals), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def statements_hash(docs: Sequence[Mapping[str, Any]]) -> str:
    return hashlib.sha256(domain_bytes("statements", [dict(d) for d in docs])).hexdigest()


def to_csv(docs: Sequence[Mapping[str, Any]]) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(
        [
            "client",
            "period",
            "section",
            "chain",
            "network",
            "asset",
            "opening",
            "closing",
            "amount",
            "value",
            "currency",
            "txid",
            "date",
        ]
    )
    for d in docs:
        for a in d["assets"]:
            w.writerow(
                [
                    d["client"]["id"],
                    d["period"],
                    "position",
                    a["chain"],
                    a["network"],
                    a["asset"],
                    a["opening"],
                    a["closing"],
                    "",
                    a["value"] or "",
                    a["currency"] or "",
                    "",
                    "",
                ]
            )
        for t in d["transfers"]:
            w.writerow(
                [
                    d["client"]["id"],
                    d["period"],
                    t["type"],
                    t["chain"],
                    t["network"],
                    t["asset"],
                    "",
                    "",
                    t["amount"],
                    "",
                    "",
                    t["txid"] or "",
                    t["date"],
                ]
            )
    return out.getvalue()


def find_issued(document: bytes, issued: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The ``statement.issued`` log entry for ``document``: a PDF by its SHA-256, or the
    JSON statements by their hash; InputError when the log has none."""
    if document.startswith(b"%PDF"):
        field, digest = "pdf_sha256", hashlib.sha256(document).hexdigest()
    else:
        from tandem.core.canonical import loads_strict

        docs = loads_strict(document)
        if not isinstance(docs, list):
            raise InputError("a statement file is a PDF or the JSON list of statements")
        field, digest = "json_sha256", statements_hash(docs)
    for entry in issued:
        if entry["data"].get(field) == digest:
            return entry
    raise InputError(f"no statement with {field.split('_')[0].upper()} hash {digest} was issued in this log")
