"""Serving the console on 127.0.0.1 (a random free port unless one is asked for)."""

from __future__ import annotations

import socket
import threading
from types import TracebackType

import uvicorn

from tandem.console.app import create_console_app
from tandem.console.state import ConsoleState

HOST = "127.0.0.1"


def bind(port: int = 0) -> socket.socket:
    """A listening socket on the loopback interface only; the port is known before serving
    (the Host check needs it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((HOST, port))
    sock.listen(16)
    return sock


def make_server(state: ConsoleState, sock: socket.socket) -> uvicorn.Server:
    state.port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_console_app(state),
        log_level="warning",
        # The access log would write the opening URL, token included; it stays off.
        access_log=False,
        server_header=False,
        lifespan="off",
    )
    return uvicorn.Server(config)


def opening_url(state: ConsoleState) -> str:
    return f"http://{HOST}:{state.port}/?t={state.token}"


class ConsoleThread:
    """The console served from a background thread (tests and screenshots)."""

    def __init__(self, state: ConsoleState, port: int = 0) -> None:
        self.state = state
        self.sock = bind(port)
        self.server = make_server(state, self.sock)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return opening_url(self.state)

    @property
    def origin(self) -> str:
        return f"http://{HOST}:{self.state.port}"

    def __enter__(self) -> ConsoleThread:
        self._stop_idle = self.state.watch_idle(every=0.2)
        self.thread.start()
        for _ in range(500):
            if self.server.started:
                break
            threading.Event().wait(0.01)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop_idle.set()
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
