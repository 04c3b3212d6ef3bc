"""The errors a new user met, said clearly: an auditor approving a withdrawal, "an
auditor" with its article, malformed JSON with its line and column, a float named for
what the field is, the API's query-string syntax kept out of CLI messages, and
`addressbook add --chain solana`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.conftest import World, new_member
from tests.helpers.cli import invoke, ks, wire

from tandem.cli import exit_codes
from tandem.core.roles import Role, a_role

PASSPHRASE = "cli unclear errors passphrase"
SOLANA_ADDRESS = "9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin"


def run(*args: str, input: str | None = None) -> tuple[int, str]:
    return invoke(*args, input=input)


@pytest.fixture
def cli_world(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    return wire(world, tmp_path, monkeypatch, PASSPHRASE)


def test_an_auditor_approving_a_withdrawal_is_told_who_approves(cli_world: World, tmp_path: Path) -> None:
    # No TOTP is asked for (no input is given): the refusal comes first.
    status, out = run("withdraw", "approve", "wd_0123456789abcdef", *ks(tmp_path, "olga"))
    assert status == exit_codes.REFUSED, out
    assert "auditors read and verify, they do not approve withdrawals" in out
    assert "A custodian approves" in out
    assert "tandem withdraw show wd_0123456789abcdef" in out
    assert "[role_not_allowed]" in out


def test_roles_take_their_article(cli_world: World, tmp_path: Path) -> None:
    assert a_role("auditor") == "an auditor"
    assert a_role(Role.MANAGER) == "a manager"
    prop = cli_world.client.members.propose_add(cli_world["alice"], new_member("nina", Role.CUSTODIAN).card())
    status, out = run("proposal", "veto", prop["id"], "--reason", "no", *ks(tmp_path, "olga"))
    assert status == exit_codes.REFUSED, out
    assert "an auditor may not" in out
    assert "a auditor" not in out


def test_malformed_json_names_the_file_line_and_column(cli_world: World, tmp_path: Path) -> None:
    card = tmp_path / "nina.json"
    card.write_text('{\n  "name": "nina",\n  "role": custodian\n}\n')
    status, out = run("member", "propose-add", str(card), *ks(tmp_path, "alice"))
    assert status == exit_codes.BAD_INPUT, out
    assert f"{card}: malformed JSON at line 3, column 11: Expecting value [malformed_json]" in " ".join(
        out.split()
    )


def test_a_missing_file_is_not_found(cli_world: World, tmp_path: Path) -> None:
    status, out = run("member", "propose-add", str(tmp_path / "nobody.json"), *ks(tmp_path, "alice"))
    assert status == exit_codes.NOT_FOUND, out
    assert "no file" in out


def test_a_float_is_named_for_the_field_it_is_in(cli_world: World, tmp_path: Path) -> None:
    policy = cli_world.client.policy.show(cli_world["alice"])["policy"]
    policy = {**policy, "version": policy["version"] + 1}
    policy["rules"][0]["approval_ttl_seconds"] = 3600.0
    policy["rules"][0]["max_amount"] = 0.5
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(policy))
    status, out = run("policy", "propose", str(path), *ks(tmp_path, "alice"))
    flat = " ".join(out.split())
    assert status == exit_codes.BAD_INPUT, out
    assert "rules[0].approval_ttl_seconds is 3600.0: write a whole number, e.g. 3600" in flat
    assert 'rules[0].max_amount is 0.5: write an amount as a decimal string, e.g. "0.5"' in flat
    assert "[float_not_allowed]" in flat


def test_policy_explain_asks_for_options_not_query_strings(cli_world: World, tmp_path: Path) -> None:
    status, out = run("policy", "show", "--chain", "bitcoin", *ks(tmp_path, "olga"))
    assert status == exit_codes.BAD_INPUT, out
    assert "give --withdrawal ID, or every fact" in out
    assert "--wallet" in out
    assert "?" not in out


def test_addressbook_add_takes_a_solana_address(cli_world: World, tmp_path: Path) -> None:
    status, out = run(
        "addressbook", "add", "--chain", "solana", "--network", "devnet", "--address", SOLANA_ADDRESS,
        "--label", "exchange hot wallet", *ks(tmp_path, "alice"),
    )  # fmt: skip
    assert status == exit_codes.OK, out
    assert json.loads(out)["body"]["chain"] == "solana"
