"""`tandem console` as a member starts it: a process that serves the console on a random
loopback port and prints the link with its token (no browser opened with --no-open)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from tests.console.conftest import ConsoleWorld

from tandem.cli import exit_codes
from tandem.console.guard import COOKIE

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1", "BROWSER": "true"}


def test_tandem_console_prints_a_link_that_opens_the_console(console_world: ConsoleWorld) -> None:
    c = console_world
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tandem.cli",
            "console",
            "-k",
            str(c.keystore),
            "--server",
            c.api.url,
            "--no-open",
            "--idle-minutes",
            "5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(),
    )
    try:
        assert proc.stdout is not None
        url = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not url:
            line = proc.stdout.readline()
            if line.startswith("open: "):
                url = line.removeprefix("open: ").strip()
        assert url.startswith("http://127.0.0.1:"), url
        assert "?t=" in url
        origin = url.split("/?t=")[0]
        for _ in range(100):
            try:
                first = httpx.get(url, follow_redirects=False)
                break
            except httpx.ConnectError:
                time.sleep(0.1)
        assert first.status_code == 303
        token = first.cookies[COOKIE]
        page = httpx.get(origin + "/", cookies={COOKIE: token}, follow_redirects=True)
        assert page.status_code == 200
        assert "Unlock your keystore" in page.text
        assert "Locks after 5 min idle" in page.text
        assert "Example Fund SICAV" in page.text
        assert httpx.get(origin + "/").status_code == 403
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_tandem_console_without_a_keystore_says_so(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tandem.cli", "console", "-k", str(tmp_path / "nope.keystore"), "--no-open"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
        check=False,
    )
    assert done.returncode == exit_codes.BAD_INPUT
    assert "no keystore at" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
