"""The custodian's whole approval in a real browser, against a real server: open the
console's link, unlock, read the queue, review, type the fingerprint and the TOTP code,
approve; and the refusals a person meets, shown as readable messages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.console.conftest import PASSPHRASE, ConsoleWorld, shots
from tests.helpers.withdrawals import btc_intent


def request(cw_: ConsoleWorld, **kw: Any) -> dict[str, Any]:
    """alice (manager) asks for a withdrawal, as `tandem withdraw create` would."""
    return cw_.world.client.withdrawals.create(cw_.world["alice"], btc_intent(cw_.s, **kw))


def open_and_unlock(page: Any, c: ConsoleWorld) -> None:
    page.goto(c.console.url)
    # The token left the address bar for an HttpOnly cookie; the key is still locked.
    assert c.state.token not in page.url
    assert page.url.startswith(c.console.origin + "/unlock")
    page.get_by_label("Keystore passphrase").fill(PASSPHRASE)
    page.get_by_role("button", name="Unlock").click()
    page.wait_for_load_state()
    if "Waiting for you" not in page.content():
        raise AssertionError(page.content()[-3000:])


def test_custodian_reviews_and_approves_a_withdrawal(console_world: ConsoleWorld, page: Any) -> None:
    c = console_world
    created = request(c, amount=50_000)
    open_and_unlock(page, c)
    assert "Example Fund SICAV" in page.title()
    assert "bob" in page.title()
    row = page.locator("tr", has_text=created["id"])
    assert "0.0005 BTC" in row.inner_text()
    assert "cold vault btc" in row.inner_text()
    assert "alice (manager)" in row.inner_text()
    assert "0 of 1" in row.inner_text()

    row.get_by_role("link", name="Review").click()
    page.get_by_role("heading", name="Fingerprint").wait_for()
    assert page.locator("#fingerprint").inner_text() == created["fingerprint"]
    assert page.locator("#amount").inner_text() == "0.0005 BTC"
    assert page.locator("#to-label").inner_text() == "cold vault btc"
    assert "0.00001045 BTC" in page.locator("#fee").inner_text()
    assert "alice (manager)" in page.locator("#requester").inner_text()

    page.get_by_label("Fingerprint the requester read out").fill(created["fingerprint"])
    page.get_by_label("TOTP code from your authenticator app").fill(c.code())
    page.get_by_role("button", name="Approve and sign").click()
    page.get_by_role("status").filter(has_text="Your approval was recorded.").wait_for()
    assert page.locator("h1 .status").inner_text() == "approved"
    assert "bob (custodian)" in page.locator("#approvals").inner_text()
    # The server agrees: the approval counted.
    assert c.world.client.withdrawals.get(c.world["olga"], created["id"])["status"] == "approved"


def _review(page: Any, c: ConsoleWorld, wid: str) -> None:
    page.goto(f"{c.console.origin}/withdrawals/{wid}")
    page.get_by_role("heading", name="Fingerprint").wait_for()


def _approve(page: Any, fingerprint: str, code: str) -> str:
    page.get_by_label("Fingerprint the requester read out").fill(fingerprint)
    page.get_by_label("TOTP code from your authenticator app").fill(code)
    page.get_by_role("button", name="Approve and sign").click()
    alert = page.get_by_role("alert")
    alert.wait_for()
    return str(alert.inner_text())


def test_refusals_read_as_sentences(console_world: ConsoleWorld, page: Any, tmp_path: Path) -> None:
    c = console_world
    created = request(c)
    wid, fp = created["id"], created["fingerprint"]
    page.goto(c.console.url)
    page.get_by_label("Keystore passphrase").wait_for()
    page.screenshot(path=str(shots(tmp_path) / "unlock.png"))
    open_and_unlock(page, c)

    _review(page, c, wid)
    wrong_code = f"{(int(c.code()) + 1) % 1_000_000:06d}"
    text = _approve(page, fp, wrong_code)
    assert "The TOTP code was not accepted" in text
    assert "[totp_invalid]" in text

    _review(page, c, wid)
    other = "0000-1111-2222-3333"
    text = _approve(page, other, c.code())
    page.screenshot(path=str(shots(tmp_path) / "refused.png"), full_page=True)
    assert "The fingerprint you typed is not this request's" in text
    assert "[fingerprint_mismatch]" in text

    _review(page, c, wid)
    # The request expires while the page is open (its TTL is a day).
    c.world.clock.advance(86_400 + 60)
    text = _approve(page, fp, c.code())
    assert "[expired]" in text, text
    assert "This request has expired" in text
    assert c.world.client.withdrawals.get(c.world["olga"], wid)["approvals"] == []


def test_a_high_fee_is_a_warning_on_the_review(console_world: ConsoleWorld, page: Any) -> None:
    c = console_world
    created = request(c, amount=5_000)  # the same 1045 sat fee is now 20.9% of the amount
    open_and_unlock(page, c)
    _review(page, c, created["id"])
    warnings = page.get_by_role("note", name="Warnings").inner_text()
    assert "20.9" in warnings
    assert "fee" in warnings.lower()


def test_a_lost_operation_key_reads_as_the_commands_that_recover_it(
    console_world: ConsoleWorld, page: Any, tmp_path: Path
) -> None:
    """The server restarted between the request and the approval: its one-time operation
    key is gone. The page says so in words, with the commands that bring the request back,
    and nothing was counted."""
    from tandem.services.keyuse import OperationKeys

    c = console_world
    created = request(c)
    open_and_unlock(page, c)
    _review(page, c, created["id"])
    c.world.svc.keys.operations = OperationKeys()  # what a restart leaves: no live operation key
    text = _approve(page, created["fingerprint"], c.code())
    page.screenshot(path=str(shots(tmp_path) / "operation-key-lost.png"), full_page=True)
    assert "[operation_key_lost]" in text, text
    assert "restarted" in text
    assert f"tandem withdraw contribute {created['id']} --renew -k MANAGER.keystore" in text, text
    assert c.world.client.withdrawals.get(c.world["olga"], created["id"])["approvals"] == []

    # The recovery as printed: the manager renews and gives the share again; the
    # custodian approves here again; the release then goes through.
    alice = c.world["alice"]
    c.world.client.withdrawals.renew_operation(alice, created["id"])
    c.world.client.withdrawals.contribute_share(alice, created["id"], totp=None)
    _review(page, c, created["id"])
    page.get_by_label("Fingerprint the requester read out").fill(created["fingerprint"])
    page.get_by_label("TOTP code from your authenticator app").fill(c.code())
    page.get_by_role("button", name="Approve and sign").click()
    page.get_by_role("status").filter(has_text="Your approval was recorded.").wait_for()
    released = c.world.client.withdrawals.release(c.world["bob"], created["id"])
    assert released["status"] == "released"
