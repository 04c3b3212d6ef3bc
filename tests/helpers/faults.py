"""Crash injection for the crash tests (THREATS 13). Production code only names its
fault points; these helpers make a test process kill itself at one of them.

``python -m tests.helpers.faults POINT ARGS...`` runs the ``tandem`` command line with
``ARGS`` after installing a hook that SIGKILLs the process at ``POINT``.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

from tandem.services.base import install_fault_hook


def sigkill_at(point: str) -> Callable[[str], None]:
    def hook(name: str) -> None:
        if name == point:
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def main() -> None:
    point, *args = sys.argv[1:]
    install_fault_hook(sigkill_at(point))
    from tandem.cli.main import main as tandem_main

    sys.argv = ["tandem", *args]
    tandem_main()


if __name__ == "__main__":
    main()
