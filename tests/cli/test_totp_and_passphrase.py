"""The second factor as a person meets it: codes typed with a space, a used code that
says when the next one comes, `totp enrol` with a QR code and a confirmation from the
authenticator, a keystore that keeps no seed unless asked; passphrases checked before
they are typed twice, and three tries at a wrong one."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import World, new_member
from tests.helpers.cli import invoke, ks, wire

from tandem.cli import common, exit_codes
from tandem.core.identity import MemberSecrets
from tandem.core.roles import Role
from tandem.core.totp import STEP_SECONDS, code_at

PASSPHRASE = "cli totp test passphrase"
NEW_SEED = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


def run(*args: str, input: str | None = None) -> tuple[int, str]:
    return invoke(*args, input=input)


@pytest.fixture
def cli_world(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    return wire(world, tmp_path, monkeypatch, PASSPHRASE, keep_totp_seed=False)


def proposal(world: World) -> str:
    return str(
        world.client.members.propose_add(world["alice"], new_member("nina", Role.CUSTODIAN).card())["id"]
    )


def test_a_code_typed_with_a_space_is_accepted(cli_world: World, tmp_path: Path) -> None:
    prop = proposal(cli_world)
    code = cli_world.code("bob")
    status, out = run("proposal", "approve", prop, *ks(tmp_path, "bob"), "--totp", f"{code[:3]} {code[3:]}")
    assert status == exit_codes.OK, out
    assert cli_world.client.get(cli_world["bob"], f"/v1/proposals/{prop}")["status"] != "pending"


def test_a_prompted_code_with_a_space_is_accepted(cli_world: World, tmp_path: Path) -> None:
    prop = proposal(cli_world)
    code = cli_world.code("bob")
    status, out = run("proposal", "approve", prop, *ks(tmp_path, "bob"), input=f" {code[:3]} {code[3:]} \n")
    assert status == exit_codes.OK, out


def test_a_code_that_is_not_six_digits_is_bad_input_and_nothing_is_sent(
    cli_world: World, tmp_path: Path
) -> None:
    prop = proposal(cli_world)
    status, out = run("proposal", "approve", prop, *ks(tmp_path, "bob"), "--totp", "12345")
    assert status == exit_codes.BAD_INPUT, out
    assert "6 digits" in out


def test_a_used_code_says_how_many_seconds_until_the_next(cli_world: World, tmp_path: Path) -> None:
    world = cli_world
    first, second = proposal(world), None
    code = world.code("bob")
    status, out = run("proposal", "approve", first, *ks(tmp_path, "bob"), "--totp", code)
    assert status == exit_codes.OK, out
    world.clock.advance(7)
    second = str(
        world.client.members.propose_add(world["mark"], new_member("nick", Role.CUSTODIAN).card())["id"]
    )
    status, out = run("proposal", "approve", second, *ks(tmp_path, "bob"), "--totp", code)
    wait = STEP_SECONDS - world.clock() % STEP_SECONDS
    assert status == exit_codes.REFUSED, out
    assert f"the next code comes in {wait} s [totp_replayed, HTTP 401]" in out
    assert f"wait {wait} s for your authenticator's next code" in out


def test_enrol_shows_a_qr_code_asks_for_a_code_and_keeps_no_seed(
    cli_world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = cli_world
    import pyotp

    monkeypatch.setattr(pyotp, "random_base32", lambda length=32: NEW_SEED)
    keystore = tmp_path / "bob.keystore"
    before = keystore.read_bytes()
    old = world.code("bob")
    world.clock.advance(STEP_SECONDS)
    confirm = code_at(NEW_SEED, world.clock() // STEP_SECONDS)

    # A wrong confirmation: refused, nothing changes.
    status, out = run("totp", "enrol", *ks(tmp_path, "bob"), "--old-totp", old, input="000000\n")
    assert status == exit_codes.REFUSED, out
    assert "confirmation code does not match the new seed" in out
    assert keystore.read_bytes() == before

    world.clock.advance(STEP_SECONDS)
    old = code_at(world["bob"].totp_secret, world.clock() // STEP_SECONDS)
    confirm = code_at(NEW_SEED, world.clock() // STEP_SECONDS)
    status, out = run("totp", "enrol", *ks(tmp_path, "bob"), "--old-totp", old, input=f"{confirm}\n")
    assert status == exit_codes.OK, out
    assert "Scan this with your authenticator app" in out
    assert "▀" in out or "▄" in out, "a QR code drawn in the terminal"
    assert f"secret={NEW_SEED}" in out
    assert f"tandem totp enrol -k {keystore} --old-totp CODE" in out
    assert "holds both factors" not in out
    assert not MemberSecrets.from_keystore(keystore.read_bytes(), PASSPHRASE).holds_totp_seed

    # The server now takes codes of the new seed, from the authenticator.
    world.clock.advance(STEP_SECONDS)
    prop = proposal(world)
    status, out = run(
        "proposal", "approve", prop, *ks(tmp_path, "bob"),
        "--totp", code_at(NEW_SEED, world.clock() // STEP_SECONDS),
    )  # fmt: skip
    assert status == exit_codes.OK, out

    # Without a seed in the keystore there is nothing to show or compute from it.
    status, out = run("totp", "uri", *ks(tmp_path, "bob"))
    assert status == exit_codes.BAD_INPUT
    assert "does not keep your TOTP seed" in out
    assert "--old-totp CODE" in out
    status, out = run("proposal", "approve", prop, *ks(tmp_path, "bob"), "--totp-from-keystore")
    assert status == exit_codes.BAD_INPUT
    assert "does not keep your TOTP seed" in out


def test_keep_seed_in_keystore_warns_that_it_holds_both_factors(
    cli_world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = cli_world
    import pyotp

    monkeypatch.setattr(pyotp, "random_base32", lambda length=32: NEW_SEED)
    keystore = tmp_path / "cora.keystore"
    world.clock.advance(STEP_SECONDS)
    old = code_at(world["cora"].totp_secret, world.clock() // STEP_SECONDS)
    confirm = code_at(NEW_SEED, world.clock() // STEP_SECONDS)
    status, out = run(
        "totp",
        "enrol",
        *ks(tmp_path, "cora"),
        "--old-totp",
        old,
        "--keep-seed-in-keystore",
        "--totp",
        confirm,
    )
    assert status == exit_codes.OK, out
    assert "holds both factors" in out
    assert MemberSecrets.from_keystore(keystore.read_bytes(), PASSPHRASE).totp_secret == NEW_SEED
    status, out = run("totp", "uri", *ks(tmp_path, "cora"))
    assert status == exit_codes.OK, out
    assert f"secret={NEW_SEED}" in out
    world.clock.advance(STEP_SECONDS)
    status, out = run("proposal", "approve", proposal(world), *ks(tmp_path, "cora"), "--totp-from-keystore")
    assert status == exit_codes.OK, out


def test_id_create_keeps_no_seed_unless_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TANDEM_PASSPHRASE", PASSPHRASE)
    monkeypatch.delenv("TANDEM_KEEP_TOTP_SEED", raising=False)
    plain, scripted = tmp_path / "p.keystore", tmp_path / "s.keystore"
    status, out = run("id", "create", "--name", "pat", "--role", "custodian", "--out", str(plain))
    assert status == exit_codes.OK, out
    assert "otpauth://" not in out
    assert f"tandem totp enrol -k {plain}" in out
    assert not MemberSecrets.from_keystore(plain.read_bytes(), PASSPHRASE).holds_totp_seed
    status, out = run(
        "id",
        "create",
        "--name",
        "sam",
        "--role",
        "custodian",
        "--out",
        str(scripted),
        "--keep-seed-in-keystore",
    )
    assert status == exit_codes.OK, out
    assert "holds both factors" in out
    assert MemberSecrets.from_keystore(scripted.read_bytes(), PASSPHRASE).holds_totp_seed


def _typed(monkeypatch: pytest.MonkeyPatch, answers: list[str]) -> list[str]:
    """A person at a terminal typing ``answers`` to the passphrase prompts."""
    monkeypatch.delenv("TANDEM_PASSPHRASE", raising=False)
    monkeypatch.setattr(common.sys.stdin, "isatty", lambda: True, raising=False)
    prompts: list[str] = []

    def getpass(prompt: str) -> str:
        prompts.append(prompt)
        return answers.pop(0)

    monkeypatch.setattr(common.getpass, "getpass", getpass)
    return prompts


def test_the_passphrase_rule_is_checked_before_it_is_typed_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out_file = tmp_path / "k.keystore"
    prompts = _typed(monkeypatch, ["short", PASSPHRASE, PASSPHRASE])
    secret = common.passphrase(confirm=True)
    assert secret == PASSPHRASE
    assert [p.split(" (")[0].rstrip(": ") for p in prompts] == [
        "New keystore passphrase",
        "New keystore passphrase",
        "Repeat passphrase",
    ]
    assert not out_file.exists()


def test_a_wrong_passphrase_may_be_typed_again_three_times(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    member = new_member("pat", Role.CUSTODIAN)
    path = tmp_path / "pat.keystore"
    path.write_bytes(member.to_keystore(PASSPHRASE, log2_n=14))
    _typed(monkeypatch, ["wrong one", "wrong two", PASSPHRASE])
    assert common.load_member(path).member_id == member.member_id
    said = capsys.readouterr().err
    assert "2 tries left" in said
    assert "1 try left" in said

    _typed(monkeypatch, ["wrong"] * 3)
    with pytest.raises(Exception, match="wrong passphrase"):
        common.load_member(path)


def test_no_code_on_a_closed_input_says_how_to_give_one(cli_world: World, tmp_path: Path) -> None:
    prop = proposal(cli_world)
    status, out = run("proposal", "approve", prop, *ks(tmp_path, "bob"), input="")
    assert status == exit_codes.BAD_INPUT, out
    assert "no TOTP code: type it when asked, or pass --totp CODE" in out
    assert "Aborted" not in out
