"""The register pages in the browser, against a real server whose books read a Bitcoin
chain through the Esplora backend (answering as Esplora documents, tests/chainio/mock_nodes.py):
positions in coins, a reconciliation run and re-verified on the member's machine, and
statements issued, downloaded and checked by hash against the verified log."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.books.helpers import make_client
from tests.chainio.mock_nodes import NETWORK, EsploraServer, backend_for
from tests.console.conftest import ConsoleWorld, shots
from tests.console.test_console_browser import open_and_unlock
from tests.helpers.keysets import make_keyset

from tandem.chainio import ChainConfig
from tandem.services.books import Books

SPEC = "esplora+https://esplora.example/api"


def books_with_deposits(c: ConsoleWorld) -> tuple[Books, EsploraServer, str]:
    """Client acme with a segregated wallet holding two deposits, scanned into the register;
    the served API's books read the same (mock) chain."""
    w = c.world
    server = EsploraServer()
    books = Books(w.svc.runner, w.svc.withdrawals, ChainConfig.from_mapping({f"bitcoin.{NETWORK}": SPEC}))
    books._backends[("bitcoin", NETWORK)] = backend_for("bitcoin", NETWORK, SPEC, server)
    c.api.server.config.app.state.books = books
    make_client(w, books, "acme", name="Acme Pension Fund")
    ks = make_keyset(w, chains=(("bitcoin", NETWORK),), segregation="client:acme")
    address = ks.addresses[0]["address"]
    server.fund(address, 40_000, height=150)
    server.fund(address, 2_500, height=151)
    assert len(books.scan_deposits()) == 2
    return books, server, address


def submit(page: Any, button: str) -> None:
    with page.expect_navigation(wait_until="load"):
        page.get_by_role("button", name=button).click()


def test_positions_in_coins_from_the_verified_log(
    console_world: ConsoleWorld, page: Any, tmp_path: Path
) -> None:
    c = console_world
    _books, _server, address = books_with_deposits(c)
    open_and_unlock(page, c)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Register").click()
    page.get_by_role("heading", name="Register: positions").wait_for()
    assert "Rebuilt on this machine from the verified audit log" in page.get_by_role("status").inner_text()
    row = page.locator("#positions tr", has_text=address)
    text = row.inner_text()
    assert "Acme Pension Fund (acme)" in text
    assert "0.000425 BTC" in text
    assert "42,500 sat" in text
    assert page.get_by_role("alert").count() == 0  # the server's positions agree with the log's
    page.screenshot(path=str(shots(tmp_path) / "register.png"), full_page=True)


def test_reconciliation_is_re_verified_here(console_world: ConsoleWorld, page: Any, tmp_path: Path) -> None:
    c = console_world
    _books, server, address = books_with_deposits(c)
    open_and_unlock(page, c)
    page.goto(f"{c.console.origin}/books/reconciliations")
    before = page.locator("#reports tbody tr").count()
    submit(page, "Reconcile and verify")
    verified = page.locator("#report-verified").inner_text()
    assert verified.startswith("Verified here")
    assert "Verdict: reconciled." in verified
    # An output the register never saw: the next report names it.
    server.fund(address, 999, height=160)
    submit(page, "Reconcile and verify")
    assert "Verdict: discrepancies." in page.locator("#report-verified").inner_text()
    assert "unexpected_inflow" in page.get_by_label("Discrepancies").inner_text()
    assert page.locator("#reports tbody tr").count() == before + 2
    page.screenshot(path=str(shots(tmp_path) / "reconciliation.png"), full_page=True)

    # A signed report from the CLI (`tandem reconcile --out`), checked here; then one altered.
    signed = c.world.client.books.reconcile(c.world["alice"])
    good = tmp_path / "report.json"
    good.write_text(json.dumps(signed), encoding="utf-8")
    page.set_input_files("#report", str(good))
    submit(page, "Verify the report")
    assert page.locator("#report-verified").inner_text().startswith("Verified here")
    made = signed["report"]["verdict"]
    signed["report"]["verdict"] = "discrepancies" if made == "reconciled" else "reconciled"
    bad = tmp_path / "altered.json"
    bad.write_text(json.dumps(signed), encoding="utf-8")
    page.set_input_files("#report", str(bad))
    submit(page, "Verify the report")
    alert = page.get_by_role("alert").inner_text()
    assert "Refused" in alert
    assert f"re-run gives {made}" in alert


def test_statements_issued_downloaded_and_checked(
    console_world: ConsoleWorld, page: Any, tmp_path: Path
) -> None:
    c = console_world
    books_with_deposits(c)
    moment = datetime.fromtimestamp(c.world.clock(), UTC)
    period = f"{moment.year}-{moment.month:02d}"
    open_and_unlock(page, c)
    page.goto(f"{c.console.origin}/books/statements")
    page.get_by_label("Period (UTC)").fill(period)
    page.get_by_label("Client id").fill("acme")
    page.get_by_label("Custodian's name for the heading").fill("Example Custody AG")
    submit(page, "Issue and verify")
    assert page.locator("#statement-verified").inner_text().startswith("Verified here")
    assert page.locator("#statements tbody tr").count() == 1
    page.screenshot(path=str(shots(tmp_path) / "statements.png"), full_page=True)

    with page.expect_download() as dl:
        page.get_by_role("link", name="Download PDF").click()
    pdf = Path(dl.value.path()).read_bytes()
    assert pdf.startswith(b"%PDF")
    with page.expect_download() as dl:
        page.get_by_role("link", name="Download JSON").click()
    docs = json.loads(Path(dl.value.path()).read_text(encoding="utf-8"))
    assert [d["client"]["id"] for d in docs] == ["acme"]
    assert docs[0]["custodian"] == "Example Custody AG"
    assert docs[0]["assets"][0]["closing"] == "42500"
    # The JSON file checks out against the log too.
    saved_json = tmp_path / "statement.json"
    saved_json.write_bytes(Path(dl.value.path()).read_bytes())
    page.set_input_files("#document", str(saved_json))
    submit(page, "Verify the file")
    assert f"the statement for {period} (acme)" in page.locator("#statement-match").inner_text()

    saved = tmp_path / "statement.pdf"
    saved.write_bytes(pdf)
    page.set_input_files("#document", str(saved))
    submit(page, "Verify the file")
    assert f"the statement for {period} (acme)" in page.locator("#statement-match").inner_text()

    altered = tmp_path / "altered.pdf"
    altered.write_bytes(pdf.replace(b"Example Custody AG", b"Example Custody AH"))
    assert altered.read_bytes() != pdf
    page.set_input_files("#document", str(altered))
    submit(page, "Verify the file")
    assert "was issued in this log" in page.get_by_role("alert").inner_text()


def test_a_server_that_misstates_positions_is_named(console_world: ConsoleWorld, page: Any) -> None:
    """The page shows the log's positions; a server answering others (as a compromised one
    would) is named in a red box, with both figures."""
    c = console_world
    books, _server, address = books_with_deposits(c)
    honest = books.positions

    def inflated(**page: Any) -> dict[str, Any]:
        rows = honest(**page)
        for r in rows["items"]:
            if r["address"] == address:
                r["balance"] = str(int(r["balance"]) + 1_000_000)
        return rows

    books.positions = inflated  # type: ignore[method-assign]
    open_and_unlock(page, c)
    page.goto(f"{c.console.origin}/books")
    alert = page.get_by_role("alert").inner_text()
    assert "The server's positions differ" in alert
    assert "the log says 42500, the server 1042500" in alert
    assert "0.000425 BTC" in page.locator("#positions").inner_text()
