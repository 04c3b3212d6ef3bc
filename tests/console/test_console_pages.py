"""The other pages in the browser: proposals (a policy change as a diff, an address-book
entry) approved with TOTP, the audit log with filters and CSV export,
and a proof challenge verified on the member's machine. Each main page is screenshotted
(into docs/console/ when TANDEM_CONSOLE_SCREENSHOTS names that folder, see
scripts/console_screenshots.py)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.console.conftest import ConsoleWorld, shots
from tests.console.test_console_browser import open_and_unlock
from tests.helpers.withdrawals import STRANGER_ETH, TOKEN, btc_intent, eth_intent, policy_doc, rule

from tandem.client import ceremony as cc
from tandem.core import keygen
from tandem.core.identity import MemberSecrets
from tandem.core.roles import Role
from tandem.errors import RemoteError

ROOT = Path(__file__).resolve().parents[2]


def test_policy_change_is_shown_as_a_diff_and_approved(
    console_world: ConsoleWorld, page: Any, tmp_path: Path
) -> None:
    c, w = console_world, console_world.world
    new_policy = policy_doc(
        2,
        [
            rule("large", custodians=2, match={"min_amount": "1000000"}, allowlist_only=True),
            rule("default", custodians=1, allowlist_only=True),
        ],
        delay=86400,
    )
    prop = w.client.policy.propose(w["alice"], new_policy)
    book = w.client.policy.propose_address(
        w["alice"],
        chain="ethereum",
        network="sepolia",
        address=STRANGER_ETH,
        label="payroll",
        asset="ETH",
    )
    w.client.withdrawals.create(w["alice"], btc_intent(c.s, amount=125_000))
    w.client.withdrawals.create(w["alice"], eth_intent(c.s, asset=TOKEN, amount=1_234_567))
    out = shots(tmp_path)
    open_and_unlock(page, c)
    queue_text = page.locator("main").inner_text()
    assert "policy version 2 (2 rules)" in queue_text
    assert "as 'payroll'" in queue_text
    assert "1.234567 USDC" in queue_text
    assert "0.00125 BTC" in queue_text
    assert "Address book: add an entry" in queue_text
    assert "Withdrawal policy: change" in queue_text
    assert page.get_by_role("navigation", name="Main").locator("[aria-current=page]").inner_text() == "Queue"
    page.screenshot(path=str(out / "queue.png"), full_page=True)

    page.goto(f"{c.console.origin}/withdrawals/{_first_btc(c)}")
    page.get_by_role("heading", name="Fingerprint").wait_for()
    page.screenshot(path=str(out / "withdrawal.png"), full_page=True)

    page.goto(f"{c.console.origin}/proposals/{prop['id']}")
    diff = page.get_by_label("Policy diff")
    added = diff.locator(".d-add").all_inner_texts()
    removed = diff.locator(".d-del").all_inner_texts()
    assert any('"name": "large"' in line for line in added)
    assert any('"version": 2' in line for line in added)
    assert any('"version": 1' in line for line in removed)
    assert "Policy change: version 1 → version 2" in page.locator("main").inner_text()
    proposed = page.get_by_label("Proposed policy in words").inner_text()
    assert "“large”: covers withdrawals of at least 1,000,000 base units" in proposed
    assert "needs 2 custodians to approve" in proposed
    assert "1 custodian" in page.get_by_label("Policy in force in words").inner_text()
    page.screenshot(path=str(out / "policy-diff.png"), full_page=True)
    page.get_by_label("TOTP code from your authenticator app").fill(c.code())
    page.get_by_role("button", name="Approve and sign").click()
    page.get_by_role("status").filter(has_text="Your approval was recorded.").wait_for()
    assert page.locator("h1 .status").inner_text() == "approved"

    page.goto(f"{c.console.origin}/proposals/{book['id']}")
    page.get_by_label("TOTP code from your authenticator app").fill("000000")
    page.get_by_role("button", name="Approve and sign").click()
    assert "[totp_invalid]" in page.get_by_role("alert").inner_text()
    page.get_by_label("Why (recorded in the audit log)").fill("not our payroll address")
    page.get_by_role("button", name="Reject").click()
    page.get_by_role("status").filter(has_text="You rejected this proposal.").wait_for()


def _first_btc(c: ConsoleWorld) -> str:
    rows = c.world.client.withdrawals.list(c.world["olga"], status="pending")
    return next(r["id"] for r in rows if r["chain"] == "bitcoin")


def filter_audit(page: Any) -> None:
    """Submit the audit filter and wait for the new page to be whole, not merely committed."""
    with page.expect_navigation(wait_until="load"):
        page.get_by_role("button", name="Filter").click()


def test_audit_viewer_filters_and_exports_csv(console_world: ConsoleWorld, page: Any, tmp_path: Path) -> None:
    c, w = console_world, console_world.world
    created = w.client.withdrawals.create(w["alice"], btc_intent(c.s))
    # A refusal for the log: bob's wrong code.
    with pytest.raises(RemoteError):
        w.client.withdrawals.approve(w["bob"], created["id"], totp="000000")
    open_and_unlock(page, c)
    page.goto(f"{c.console.origin}/audit")
    assert "verified:" in page.get_by_role("status").inner_text()
    total = page.locator("table.audit tbody tr").count()
    assert total > 5
    page.screenshot(path=str(shots(tmp_path) / "audit.png"), full_page=True)
    page.get_by_label("Kind").select_option("withdrawal.created")
    filter_audit(page)
    rows = page.locator("table.audit tbody tr")
    assert rows.count() == 1
    assert created["id"] in rows.inner_text()
    assert "alice (manager)" in rows.inner_text()
    page.get_by_label("Kind").select_option("")
    page.get_by_label("Outcome").select_option("refused")
    filter_audit(page)
    refused = page.locator("table.audit tbody tr").all_inner_texts()
    assert refused
    assert all("refused" in r for r in refused)
    assert any("totp_invalid" in r for r in refused)
    page.get_by_label("Outcome").select_option("")
    page.get_by_label("Search").fill(created["id"])
    filter_audit(page)
    assert page.locator("table.audit tbody tr").count() >= 2
    with page.expect_download() as dl:
        page.get_by_role("link", name="Export CSV").click()
    text = Path(dl.value.path()).read_text(encoding="utf-8")
    table = list(csv.reader(io.StringIO(text)))
    assert table[0][:4] == ["index", "time_utc_unix", "time_local", "kind"]
    assert len(table) - 1 == page.locator("table.audit tbody tr").count()
    assert all(created["id"] in ",".join(r) for r in table[1:])
    # An id the entry is about opens its page here.
    link = page.locator("table.audit a", has_text=created["id"]).first
    assert link.get_attribute("href") == f"/withdrawals/{created['id']}"
    # A filter nothing matches says so, and offers the whole log back.
    page.get_by_label("Search").fill("nothing-has-this-in-it")
    filter_audit(page)
    assert page.locator("table.audit").count() == 0
    assert "No entry matches these filters." in page.locator("main").inner_text()
    assert page.locator("main a[href='/audit']", has_text="Show all").count() == 1


def test_proof_challenge_is_verified_on_this_machine(
    console_world: ConsoleWorld, page: Any, tmp_path: Path
) -> None:
    c, w = console_world, console_world.world
    bundle = w.client.proofs.run(
        issuer=w["olga"],
        manager=w["alice"],
        custodian=w["cora"],
        scope={"kind": "all"},
        code=lambda: w.code("cora"),
    )
    pending = w.client.proofs.issue(
        w["olga"], statement="Year end <as of 31 December>", scope={"kind": "all"}
    )
    open_and_unlock(page, c)
    page.goto(f"{c.console.origin}/proofs")
    assert pending["id"] in page.locator("main").inner_text()
    # A statement is data, never markup: shown as typed, and no element made of it.
    assert "Year end <as of 31 December>" in page.locator("main").inner_text()
    assert page.locator("main b", has_text="Year end").count() == 0
    page.screenshot(path=str(shots(tmp_path) / "proofs.png"), full_page=True)
    done = next(v for v in w.client.proofs.list(w["olga"]) if v.get("bundle_hash"))
    page.goto(f"{c.console.origin}/proofs/{done['id']}")
    assert "none yet" not in page.locator("main").inner_text()  # signed: both sides gave theirs
    result = page.locator("#proof-result").inner_text()
    assert result.startswith("Every proof verifies")
    assert str(len(bundle["proofs"])) in result
    page.screenshot(path=str(shots(tmp_path) / "proof.png"), full_page=True)


def test_console_pages_need_the_cookie_even_for_csv(console_world: ConsoleWorld) -> None:
    r = httpx.get(f"{console_world.console.origin}/audit.csv")
    assert r.status_code == 403


def test_ceremony_and_membership_reviews(console_world: ConsoleWorld, page: Any, tmp_path: Path) -> None:
    c, w = console_world, console_world.world
    text = (ROOT / "ceremonies" / "bitcoin-testnet-cold.toml").read_text(encoding="utf-8")
    ceremony = w.client.ceremonies.propose(w["alice"], text, contribution=keygen.make_contribution())
    newcomer = MemberSecrets.generate(name="dora", role=Role.CUSTODIAN)
    added = w.client.members.propose_add(w["alice"], newcomer.card())
    open_and_unlock(page, c)
    queue_text = page.locator("main").inner_text()
    assert ceremony["id"] in queue_text
    assert "add member dora as custodian" in queue_text

    page.goto(f"{c.console.origin}/ceremonies/{ceremony['id']}")
    assert "does not check out" not in page.locator("main").inner_text()
    assert (
        cc.local_digest(w.client.ceremonies.get(w["olga"], ceremony["id"]))
        in page.locator("main").inner_text()
    )
    who = page.get_by_role("region", name="Who and when").inner_text()
    assert "key generation" in who
    assert "0 so far (the definition asks for 1 custodian)" in who
    page.screenshot(path=str(shots(tmp_path) / "ceremony.png"), full_page=True)
    page.get_by_label("TOTP code from your authenticator app").fill(c.code())
    page.get_by_role("button", name="Approve and sign").click()
    page.get_by_role("status").filter(has_text="Your approval was recorded.").wait_for()
    assert "bob (custodian)" in page.locator("main").inner_text()
    # bob's contribution is kept beside his keystore for the reveal, as the CLI keeps it.
    assert list(c.keystore.parent.glob(f"*{ceremony['id']}*"))

    page.goto(f"{c.console.origin}/proposals/{added['id']}")
    assert '"name": "dora"' in page.locator("pre").inner_text()
    page.get_by_label("TOTP code from your authenticator app").fill(c.code())
    page.get_by_role("button", name="Approve and sign").click()
    page.get_by_role("status").filter(has_text="Your approval was recorded.").wait_for()
