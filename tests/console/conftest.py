"""A real Tandem server (the API app served by uvicorn on a loopback port), the member's
console served the same way against it, and Debian's Chromium driven by Playwright.

The browser tests never skip in CI: with CI=true or TANDEM_REQUIRE_BROWSER=1 a missing
/usr/bin/chromium (or playwright package) is a failure (./scripts/test installs it)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from tests.conftest import World
from tests.helpers.withdrawals import Setup, setup

from tandem.api import create_app
from tandem.client import Client
from tandem.client.pin import pin_path
from tandem.console.server import ConsoleThread, bind
from tandem.console.state import ConsoleState
from tandem.core import totp as totp_core

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSPHRASE = "console test passphrase"


def browser_required() -> bool:
    return os.environ.get("CI") == "true" or os.environ.get("TANDEM_REQUIRE_BROWSER") == "1"


class ServedApi:
    """``tandem serve``'s app for this test's service, on a real socket."""

    def __init__(self, world: World) -> None:
        self.sock = bind(0)
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(
            create_app(service=world.svc), log_level="warning", access_log=False, lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServedApi:
        self.thread.start()
        for _ in range(1000):
            if self.server.started:
                break
            threading.Event().wait(0.01)
        assert self.server.started, "the API server did not start"
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


class SteppedMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class ConsoleWorld:
    world: World
    s: Setup
    api: ServedApi
    console: ConsoleThread
    state: ConsoleState
    idle: SteppedMonotonic
    keystore: Path

    def code(self, name: str = "bob") -> str:
        """The code bob's authenticator shows in the next 30-second window."""
        self.world.clock.advance(30)
        return totp_core.current_code(self.world[name].totp_secret, self.world.clock())


@pytest.fixture
def console_world(world: World, tmp_path: Path) -> Iterator[ConsoleWorld]:
    s = setup(world)
    keystore = tmp_path / "bob.keystore"
    keystore.write_bytes(world["bob"].to_keystore(PASSPHRASE, log2_n=14))
    # bob's machine trusts what he signed: the genesis and the key set (as `genesis sign` and
    # `ceremony countersign` would have written beside his keystore).
    assert world.client.pin is not None
    world.client.pin.copy(path=pin_path(keystore)).save()
    idle = SteppedMonotonic()
    with ServedApi(world) as api:
        state = ConsoleState(
            keystore=keystore, client=Client(api.url, clock=world.clock), idle_seconds=600, monotonic=idle
        )
        with ConsoleThread(state) as console:
            yield ConsoleWorld(
                world=world, s=s, api=api, console=console, state=state, idle=idle, keystore=keystore
            )


def shots(tmp_path: Path) -> Path:
    """Where screenshots go: docs/console/ when TANDEM_CONSOLE_SCREENSHOTS names it
    (scripts/console_screenshots.py), else the test's own folder."""
    folder = Path(os.environ.get("TANDEM_CONSOLE_SCREENSHOTS") or tmp_path / "shots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing (apt-get install -y chromium; ./scripts/test does it)"
        if browser_required():
            pytest.fail(message)
        pytest.skip(message)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if browser_required():
            pytest.fail("the playwright package is missing (pip install -e '.[dev]')")
        pytest.skip("the playwright package is missing")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(15000)
    yield pg
    context.close()
