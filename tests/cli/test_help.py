"""`tandem --version`, and every command's --help reads as text: no "<bool>" beside a
flag, no traceback, and a usage line."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import typer
from typer.testing import CliRunner

import tandem
from tandem.cli import main as cli_main


def every_command() -> Iterator[list[str]]:
    def walk(cmd: Any, path: list[str]) -> Iterator[list[str]]:
        yield path
        for name, sub in sorted(getattr(cmd, "commands", {}).items()):
            yield from walk(sub, [*path, name])

    yield from walk(typer.main.get_command(cli_main.app), [])


def test_version() -> None:
    result = CliRunner().invoke(cli_main.app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"tandem {tandem.__version__}"


def test_every_help_is_clean_text() -> None:
    runner = CliRunner()
    paths = list(every_command())
    assert len(paths) > 60, "the walk found the whole command tree"
    for path in paths:
        result = runner.invoke(cli_main.app, [*path, "--help"], env={"COLUMNS": "100"})
        where = " ".join(path) or "tandem"
        assert result.exit_code == 0, (where, result.output)
        assert result.exception is None, where
        assert "Usage:" in result.output, where
        assert "<bool>" not in result.output, where
        assert "Traceback" not in result.output, where
        assert "╭" not in result.output, f"{where}: help is plain text, nothing boxed"


def test_every_command_that_shows_or_lists_takes_json() -> None:
    runner = CliRunner()
    shown = [p for p in every_command() if p and p[-1] in {"list", "show"}]
    assert len(shown) >= 12
    for path in shown:
        result = runner.invoke(cli_main.app, [*path, "--help"])
        assert "--json" in result.output, " ".join(path)
