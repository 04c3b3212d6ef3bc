#!/usr/bin/env python3
"""Regenerate the console screenshots in docs/console/*.png.

They are taken by the browser tests themselves (tests/console/test_console_pages.py,
test_console_browser.py, test_console_batch.py and test_console_register.py) against a
real server with a made-up deployment, so what the docs show is what the tests drove.
Needs /usr/bin/chromium and the dev extra (playwright).

    ./scripts/console_screenshots.py
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    out = ROOT / "docs" / "console"
    out.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "TANDEM_CONSOLE_SCREENSHOTS": str(out),
        "TANDEM_REQUIRE_BROWSER": "1",
        "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-k",
        "sqlite",
        "tests/console/test_console_pages.py",
        "tests/console/test_console_browser.py",
        "tests/console/test_console_batch.py",
        "tests/console/test_console_register.py",
    ]
    done = subprocess.run(cmd, cwd=ROOT, env=env, check=False)  # noqa: S603 - fixed argv
    if done.returncode == 0:
        print(f"screenshots in {out}:", ", ".join(sorted(p.name for p in out.glob("*.png"))))
    return done.returncode


if __name__ == "__main__":
    raise SystemExit(main())
