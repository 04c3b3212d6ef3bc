"""Every command of `tandem` runs inside the one error boundary (tandem.cli.errors_boundary):
a command added to any group, in any module, cannot skip it; and the console script's own
catch, for what is raised before a command runs, reads and exits the same way."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import pytest
import typer
import typer.main

from tandem.cli import errors_boundary, exit_codes
from tandem.cli import main as cli_main
from tandem.errors import ConfigurationError, NotFoundError


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    """Each command of the click tree typer builds, by its full name."""
    yield " ".join(("tandem", *path)), command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def _guarded(callback: Any) -> bool:
    # typer copies the callback's attributes onto the wrapper it hands to click
    return bool(getattr(callback, "__tandem_guarded__", False))


def test_every_registered_command_runs_inside_the_boundary() -> None:
    found = dict(_commands(typer.main.get_command(cli_main.app)))
    leaves = {name: c for name, c in found.items() if not hasattr(c, "commands")}
    assert len(leaves) > 90  # the whole CLI was walked, not one group
    assert "tandem withdraw approve" in leaves
    assert "tandem queue" in leaves
    assert [name for name, c in leaves.items() if c.callback is None] == []
    unguarded = [name for name, c in found.items() if c.callback is not None and not _guarded(c.callback)]
    assert unguarded == []


def test_every_typer_app_has_its_commands_guarded_at_registration() -> None:
    def apps(app: typer.Typer) -> Iterator[typer.Typer]:
        yield app
        for group in app.registered_groups:
            if group.typer_instance is not None:
                yield from apps(group.typer_instance)

    unguarded = [
        info.callback.__name__
        for app in apps(cli_main.app)
        for info in app.registered_commands
        if info.callback is not None and not _guarded(info.callback)
    ]
    assert unguarded == []


def test_the_boundary_keeps_what_typer_reads_of_a_command() -> None:
    info = next(i for i in cli_main.app.registered_commands if getattr(i.callback, "__name__", "") == "init")
    assert info.callback is not None
    assert info.callback.__name__ == "init"
    assert info.callback.__doc__ is not None
    assert "claim token" in info.callback.__doc__
    assert _guarded(info.callback)
    signature = inspect.signature(info.callback)
    assert signature == inspect.signature(info.callback.__wrapped__)  # type: ignore[attr-defined]
    assert list(signature.parameters) == ["data_dir", "new_claim_token"]


def _main_exit(monkeypatch: pytest.MonkeyPatch, exc: Exception) -> int:
    def app() -> None:
        raise exc

    monkeypatch.setattr(cli_main, "app", app)
    with pytest.raises(SystemExit) as stop:
        cli_main.main()
    return int(stop.value.code or 0)


def test_an_error_before_a_command_runs_reads_as_the_boundary_says(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    refusal = ConfigurationError("no database configured")
    assert _main_exit(monkeypatch, refusal) == errors_boundary.exit_status(refusal)
    missing = NotFoundError("no such thing")
    assert _main_exit(monkeypatch, missing) == exit_codes.NOT_FOUND
    err = capsys.readouterr().err
    assert "no database configured" in err
    assert f"[{refusal.code}" in err
    assert "Traceback" not in err


def test_a_fault_before_a_command_runs_is_one_line_and_internal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TANDEM_DEBUG", raising=False)
    assert _main_exit(monkeypatch, ValueError("secret-looking detail 1234")) == exit_codes.INTERNAL
    err = capsys.readouterr().err
    assert "internal error: ValueError" in err
    assert "secret-looking detail" not in err
    assert "Traceback" not in err


def test_a_fault_before_a_command_runs_is_raised_for_a_developer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TANDEM_DEBUG", "1")

    def app() -> None:
        raise ValueError("boom")

    monkeypatch.setattr(cli_main, "app", app)
    with pytest.raises(ValueError, match="boom"):
        cli_main.main()
