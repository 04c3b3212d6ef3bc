"""The test side of ``scripts/harness.py``: a server that kills itself at a named fault
point (THREATS 13), and the verified audit export the concurrency and crash tests end on.
Everything else (stores, servers, template deployments, TOTP steps, Bitcoin inputs) is
imported from ``scripts.harness``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from scripts import harness

from tandem.core.identity import MemberSecrets


class Server(harness.Server):
    """:class:`scripts.harness.Server`; with ``fault_point`` it is started through
    ``tests.helpers.faults``, which makes the process SIGKILL itself when it reaches that
    named point."""

    def __init__(
        self,
        store: harness.Store,
        *,
        fault_point: str | None = None,
        port: int | None = None,
        log: Path | None = None,
    ) -> None:
        super().__init__(store, port=port, log=log)
        self.fault_point = fault_point

    def command(self) -> list[str]:
        if self.fault_point:
            return [sys.executable, "-m", "tests.helpers.faults", self.fault_point, *self.serve_args()]
        return super().command()


def verified_export(client: Any, auditor: MemberSecrets, service_public: bytes) -> list[str]:
    """The whole log, verified offline against the pinned service key: chain, Merkle root,
    signed checkpoint, and every actor signature against the membership of its time."""
    from tandem.core import audit
    from tandem.core.canonical import loads_strict
    from tandem.core.membership import replay_signatures

    lines, checkpoint = client.audit.export(auditor)
    audit.verify_export(lines, checkpoint, service_public)
    replay_signatures(loads_strict(line) for line in lines)
    return list(lines)
