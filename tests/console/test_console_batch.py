"""Batch approval in the browser, against a real server: the custodian ticks reviewed
requests on /batch, types one TOTP code, and each ticked request is approved; the code
then cannot approve anything else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.console.conftest import ConsoleWorld, shots
from tests.console.test_console_browser import open_and_unlock, request


def status_of(c: ConsoleWorld, wid: str) -> str:
    return str(c.world.client.withdrawals.get(c.world["olga"], wid)["status"])


def test_custodian_approves_two_of_three_with_one_code(
    console_world: ConsoleWorld, page: Any, tmp_path: Path
) -> None:
    c = console_world
    created = [request(c, amount=amount) for amount in (50_000, 75_000, 120_000)]
    open_and_unlock(page, c)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Batch review").click()
    page.get_by_role("heading", name="Batch review").wait_for()
    table = page.locator("table#batch")
    for w, amount in zip(created, ("0.0005 BTC", "0.00075 BTC", "0.0012 BTC"), strict=True):
        row = table.locator("tr", has_text=w["id"])
        text = row.inner_text()
        # Decoded here: the amount in coins, the address-book label, who asked, the fingerprint.
        assert amount in text
        assert "cold vault btc" in text
        assert "alice (manager)" in text
        assert w["fingerprint"] in text

    first, second, third = created
    page.get_by_label(f"Approve {first['id']}").check()
    page.get_by_label(f"Approve {third['id']}").check()
    page.get_by_label("I read each selected fingerprint back to its requester").check()
    code = c.code()
    page.get_by_label("TOTP code from your authenticator app").fill(code)
    page.get_by_role("button", name="Approve selected and sign").click()
    page.get_by_role("status").filter(has_text="2 of 2 approved with one TOTP code.").wait_for()
    results = page.locator("#batch-results").inner_text()
    assert first["id"] in results
    assert third["id"] in results
    # Each reads as approved, once (no "approved (now approved)").
    assert results.count("approved") == 2
    assert "now approved" not in results
    # The one not ticked is still waiting, and still listed.
    assert second["id"] in page.locator("table#batch").inner_text()
    page.screenshot(path=str(shots(tmp_path) / "batch.png"), full_page=True)
    assert [status_of(c, w["id"]) for w in created] == ["approved", "pending", "approved"]

    # The same code again, for the one left: refused as used, nothing approved.
    page.get_by_label(f"Approve {second['id']}").check()
    page.get_by_label("I read each selected fingerprint back to its requester").check()
    page.get_by_label("TOTP code from your authenticator app").fill(code)
    page.get_by_role("button", name="Approve selected and sign").click()
    alert = page.get_by_role("alert")
    alert.wait_for()
    assert "[totp_replayed]" in alert.inner_text()
    assert "already used" in alert.inner_text()
    assert status_of(c, second["id"]) == "pending"


def test_a_request_changed_since_the_page_was_read_is_not_signed(
    console_world: ConsoleWorld, page: Any
) -> None:
    c = console_world
    created = request(c)
    open_and_unlock(page, c)
    page.goto(f"{c.console.origin}/batch")
    page.get_by_label(f"Approve {created['id']}").check()
    # What the page showed is not what the server holds now (as if it had been swapped).
    page.locator(f"input[name='reviewed-{created['id']}']").evaluate("e => e.value = '00:00'")
    page.get_by_label("I read each selected fingerprint back to its requester").check()
    page.get_by_label("TOTP code from your authenticator app").fill(c.code())
    page.get_by_role("button", name="Approve selected and sign").click()
    alert = page.get_by_role("alert")
    alert.wait_for()
    assert "[request_changed]" in alert.inner_text()
    assert status_of(c, created["id"]) == "pending"


def test_a_request_that_does_not_check_out_is_named_and_not_offered(
    console_world: ConsoleWorld, page: Any
) -> None:
    """A server that serves a transaction other than the intent (its stored bytes changed)
    gets that request named on the batch page, without a box to tick."""
    from tandem.store.models import Withdrawal

    c = console_world
    good, bad = request(c), request(c, amount=60_000)
    with c.world.svc.db.write() as session:
        row = session.get(Withdrawal, bad["id"])
        assert row is not None
        raw = bytearray(bytes.fromhex(row.unsigned_tx))
        raw[-5] ^= 0x01  # the lock time or an output amount: no longer the intent's
        row.unsigned_tx = raw.hex()
        session.add(row)
    open_and_unlock(page, c)
    page.goto(f"{c.console.origin}/batch")
    problems = page.locator("#batch-problems").inner_text()
    assert bad["id"] in problems
    assert "does not check out" in problems
    assert page.get_by_label(f"Approve {bad['id']}").count() == 0
    assert page.get_by_label(f"Approve {good['id']}").count() == 1
