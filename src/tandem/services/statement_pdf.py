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
        with pdf.table(col_widths=(26, 44, 34, 34, 34, 34, 30, 30), text_align="LEFT") as table:
            table.row(["Chain", "Asset", "Opening", "In", "Out", "Closing", "Closing (units)", "Value"])
            for a in d["assets"]:
                value = f"{a['value']} {a['currency']}" if a["value"] is not None else "not valued"
                table.row(
                    [
                        _t(f"{a['chain']}/{a['network']}"),
                        _t(a["asset"]),
                        a["opening"],
                        a["inflows"],
                        a["outflows"],
                        a["closing"],
                        _t(a.get("closing_units") or "-"),
                        _t(value),
                    ]
                )
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
            with pdf.table(col_widths=(32, 18, 40, 35, 110, 20), text_align="LEFT") as table:
                table.row(["Date", "Type", "Asset", "Amount", "Transaction id", "Block"])
                for t in d["transfers"]:
                    table.row(
                        [
                            t["date"],
                            t["type"],
                            _t(t["asset"]),
                            t["amount"],
                            _t(t["txid"] or ""),
                            str(t["height"] if t["height"] is not None else ""),
                        ]
                    )
        else:
            pdf.cell(0, 5, "No transfers.", new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
