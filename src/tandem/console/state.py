"""One console run: its secrets (the URL token, the CSRF token), the keystore it opens
and the unlocked key, held in memory only and dropped again after idle time."""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tandem.client import Client
from tandem.client import pin as client_pin
from tandem.core.identity import MemberSecrets
from tandem.errors import KeystoreError

DEFAULT_IDLE_SECONDS = 600


@dataclass
class ConsoleState:
    keystore: Path
    client: Client
    idle_seconds: int = DEFAULT_IDLE_SECONDS
    # A monotonic clock for the idle lock (tests step it); wall time comes from the Client.
    monotonic: Callable[[], float] = time.monotonic
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    port: int = 0
    # True once the key was dropped for idle time, until the next unlock: the unlock page says why.
    locked_for_idle: bool = False
    _member: MemberSecrets | None = None
    _last_used: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- the guards' comparisons ----------------------------------------------------------

    def token_ok(self, offered: str | None) -> bool:
        return offered is not None and hmac.compare_digest(offered.encode(), self.token.encode())

    def csrf_ok(self, offered: str | None) -> bool:
        return offered is not None and hmac.compare_digest(offered.encode(), self.csrf.encode())

    def allowed_hosts(self) -> frozenset[str]:
        return frozenset({f"127.0.0.1:{self.port}", f"localhost:{self.port}"})

    def allowed_origins(self) -> frozenset[str]:
        return frozenset(f"http://{h}" for h in self.allowed_hosts())

    # --- the key ------------------------------------------------------------------------------

    def member(self) -> MemberSecrets | None:
        """The unlocked member, or None once locked (idle time counts from the last request)."""
        with self._lock:
            if self._member is not None and self.monotonic() - self._last_used > self.idle_seconds:
                self._drop()
                self.locked_for_idle = True
            if self._member is not None:
                self._last_used = self.monotonic()
            return self._member

    def expire_if_idle(self) -> bool:
        """Drop the key once idle time has passed, without counting as use (the watcher
        calls this, so an unlocked console left alone does not keep its key until the next
        request). True when the console is locked afterwards."""
        with self._lock:
            if self._member is not None and self.monotonic() - self._last_used > self.idle_seconds:
                self._drop()
                self.locked_for_idle = True
            return self._member is None

    def watch_idle(self, every: float = 5.0) -> threading.Event:
        """Run :meth:`expire_if_idle` every ``every`` seconds in a daemon thread; set the
        returned event to stop it."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(every):
                self.expire_if_idle()

        threading.Thread(target=loop, name="tandem-console-idle", daemon=True).start()
        return stop

    def unlock(self, passphrase: str) -> MemberSecrets:
        try:
            data = self.keystore.read_bytes()
        except OSError as exc:
            raise KeystoreError(f"cannot read keystore {self.keystore}: {exc.strerror}") from None
        member = MemberSecrets.from_keystore(data, passphrase)
        client_pin.remember_keystore(member.member_id, self.keystore)
        with self._lock:
            self._member = member
            self._last_used = self.monotonic()
            self.locked_for_idle = False
        return member

    def lock(self) -> None:
        with self._lock:
            self._drop()
            self.locked_for_idle = False

    def _drop(self) -> None:
        self._member = None
        # Sessions were opened with the key: a locked console holds no server session either.
        self.client._sessions.clear()
