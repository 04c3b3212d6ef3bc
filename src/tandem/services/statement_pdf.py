"""Statements of position laid out as a PDF (fpdf2): a page per client, the custodian's
name and the period at the top. The bytes are reproducible: the creation date is the
period's end, so the same statement always hashes the same."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from fpdf import FPDF


def _t(text: Any) -> str:
    # The core fonts are Latin-1; anything else is shown as '?' rather than refused.
    return str(text if text is not None else "").encode("latin-1", "replace").decode("latin-1")


POSITION_COLUMNS = (
    ("Chain", 28),
    ("Asset", 62),
    ("Opening", 32),
    ("In", 32),
    ("Out", 32),
    ("Closing", 32),
    ("Closing (units)", 28),
    ("Value", 27),
)
TRANSFER_COLUMNS = (
    ("Date", 30),
    ("Type", 18),
    ("Asset", 62),
    ("Amount", 36),
    ("Transaction id", 108),
    ("Block", 19),
)


def _fit(pdf: FPDF, text: str, width: float) -> str:
    """``text`` cut to fit ``width`` mm (cells here never wrap: one line per row)."""
    if pdf.get_string_width(text) <= width - 2:
        return text
    while text and pdf.get_string_width(text + "...") > width - 2:
        text = text[:-1]
    return text + "..."


def _grid(pdf: FPDF, columns: tuple[tuple[str, int], ...], rows: list[list[str]]) -> None:
    """A table of one-line cells: laid out directly, a thousand pages in seconds."""
    pdf.set_font("Helvetica", "B", 7)
    for name, width in columns:
        pdf.cell(width, 5, name, border=1)
    pdf.ln()
    pdf.set_font("Helvetica", "", 7)
    for row in rows:
        for (_name, width), value in zip(columns, row, strict=True):
            pdf.cell(width, 5, _fit(pdf, _t(value), width), border=1)
        pdf.ln()


def render(docs: Sequence[Mapping[str, Any]], *, custodian: str) -> bytes:
    pdf = FPDF(orientation="L", unit="mm", format="A4")
    pdf.set_auto_page_break(auto=True, margin=12)
    pdf.set_creation_date(datetime.fromtimestamp(max([d["end"] for d in docs] or [0]), tz=UTC))
    pdf.set_title(_t(f"Statement of position - {custodian}"))
    pdf.set_author(_t(custodian))
    for d in docs:
        pdf.add_page()
        pdf.set_font("Helvetica", "B", 15)
        pdf.cell(0, 8, _t(f"{custodian} - statement of position"), new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", "", 10)
        client = d["client"]
        pdf.cell(
            0,
            6,
            _t(f"Client: {client['name']} ({client['id']}, {client['segregation']})"),
            new_x="LMARGIN",
            new_y="NEXT",
        )
        start = datetime.fromtimestamp(d["start"], tz=UTC).date()
        end = datetime.fromtimestamp(d["end"] - 1, tz=UTC).date()
        pdf.cell(
            0,
            6,
            _t(f"Period: {d['period']} ({start} to {end}, UTC)   Fund: {d['entity']}"),
            new_x="LMARGIN",
            new_y="NEXT",
        )
        pdf.ln(3)
        pdf.set_font("Helvetica", "B", 11)
        pdf.cell(0, 7, "Positions (base units)", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", "", 8)
        rows = [
            [
                f"{a['chain']}/{a['network']}",
                a["asset"],
                a["opening"],
                a["inflows"],
                a["outflows"],
                a["closing"],
                a.get("closing_units") or "-",
                f"{a['value']} {a['currency']}" if a["value"] is not None else "not valued",
            ]
            for a in d["assets"]
        ]
        _grid(pdf, POSITION_COLUMNS, rows)
        if d.get("total_value") is not None:
            pdf.set_font("Helvetica", "B", 10)
            pdf.cell(
                0, 7, _t(f"Total value: {d['total_value']} {d['currency']}"), new_x="LMARGIN", new_y="NEXT"
            )
        pdf.set_font("Helvetica", "", 8)
        sources = {(a["price"]["source"], a["price"]["method"]) for a in d["assets"] if a["price"]}
        for source, method in sorted(sources):
            pdf.cell(0, 5, _t(f"Valuation: {source}, {method}"), new_x="LMARGIN", new_y="NEXT")
        pdf.ln(3)
        pdf.set_font("Helvetica", "B", 11)
        pdf.cell(0, 7, f"Transfers in the period ({len(d['transfers'])})", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", "", 7)
        if d["transfers"]:
            rows = [
                [
                    t["date"],
                    t["type"],
                    t["asset"],
                    t["amount"],
                    t["txid"] or "",
                    str(t["height"] if t["height"] is not None else ""),
                ]
                for t in d["transfers"]
            ]
            _grid(pdf, TRANSFER_COLUMNS, rows)
        else:
            pdf.cell(0, 5, "No transfers.", new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
