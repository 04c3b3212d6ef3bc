"""The server's libraries come with the ``server`` extra; an auditor's install has none
of them. Operator commands check first, so a missing extra is a message, not a
traceback."""

from __future__ import annotations

import importlib.util

from tandem.errors import ConfigurationError

SERVER_MODULES = ("fastapi", "uvicorn", "sqlmodel", "sqlalchemy", "alembic", "pydantic_settings")


class ServerExtraMissingError(ConfigurationError):
    code = "server_extra_missing"


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # a finder that refuses the name outright
        return False


def require_server_extra(command: str) -> None:
    missing = [name for name in SERVER_MODULES if not _installed(name)]
    if missing:
        raise ServerExtraMissingError(
            f"`tandem {command}` runs the server, whose libraries are not installed here "
            f"({', '.join(missing)}): pip install 'tandem[server]'. Verifying exported files "
            "needs only the base install"
        )
