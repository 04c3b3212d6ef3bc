"""Starting a real `tandem serve` on a free port in tests that need their own environment.

A port found free can be taken by another process before the server binds it (parallel
workers, or an outgoing connection given the same ephemeral port), so the start is
retried on a fresh port when, and only when, the server says the address is in use."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
from scripts.harness import free_port

TANDEM = [sys.executable, "-m", "tandem.cli"]
ATTEMPTS = 4

__all__ = ["TANDEM", "free_port", "serve"]


def serve(env: dict[str, str], log: Path, timeout: float = 60.0) -> tuple[subprocess.Popen[bytes], int]:
    """A running server and its port, once `/v1/health` answers (any status)."""
    for _attempt in range(ATTEMPTS):
        port = free_port()
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [*TANDEM, "serve", "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT
            )
        if _answers(proc, port, timeout):
            return proc, port
        if "address already in use" not in log.read_text().lower():
            raise AssertionError(f"server exited with {proc.returncode}:\n{log.read_text()}")
    raise AssertionError(f"no free port after {ATTEMPTS} attempts:\n{log.read_text()}")


def _answers(proc: subprocess.Popen[bytes], port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=2)
            return True
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    proc.wait()
    raise AssertionError(f"server did not answer within {timeout:.0f} s")
