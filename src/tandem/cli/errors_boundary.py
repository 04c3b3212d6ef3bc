"""The one place where anything a command raises becomes a message and an exit status.

A person never sees a traceback: a Tandem refusal prints its message with the stable
code (the server's, for a refusal the server answered), a hint on what to do where one
is known, and exits with the status :mod:`tandem.cli.exit_codes` names for its kind. A
fault in this program prints where it happened (file and line, never the exception's
text, which could hold a value) and exits ``INTERNAL``; ``TANDEM_DEBUG=1`` re-raises it
for a developer.
"""

from __future__ import annotations

import functools
import os
import re
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from tandem import errors
from tandem.cli import exit_codes
from tandem.errors import RemoteError

F = TypeVar("F", bound=Callable[..., Any])
# Standard error, for every refusal; tandem.cli.common.err_console is this console (this
# module imports nothing of the CLI but its exit codes, so common can import it).
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def _all_error_classes() -> dict[str, type[errors.Error]]:
    """Every Error subclass by its stable code, so a code the server answers maps to the
    same kind of outcome as the same refusal raised on this machine."""
    found: dict[str, type[errors.Error]] = {}
    todo: list[type[errors.Error]] = [errors.Error]
    while todo:
        cls = todo.pop()
        found.setdefault(cls.code, cls)
        todo.extend(cls.__subclasses__())
    return found


# Checked in order: the first class that matches decides the status.
_KINDS: tuple[tuple[type[errors.Error], int], ...] = (
    (errors.ServerUnreachableError, exit_codes.UNREACHABLE),
    (errors.NotFoundError, exit_codes.NOT_FOUND),
    (errors.ConflictError, exit_codes.CONFLICT),
    (errors.ReplayError, exit_codes.CONFLICT),
    (errors.TamperedError, exit_codes.REFUSED),
    (errors.SealedError, exit_codes.SERVER_ERROR),
    (errors.AuditWriteError, exit_codes.SERVER_ERROR),
    (errors.InputError, exit_codes.BAD_INPUT),
)


def _status_by_http(status: int) -> int:
    if status == 404:
        return exit_codes.NOT_FOUND
    if status == 409:
        return exit_codes.CONFLICT
    if status in {400, 413, 422}:
        return exit_codes.BAD_INPUT
    if status >= 500:
        return exit_codes.SERVER_ERROR
    return exit_codes.REFUSED


def exit_status(exc: errors.Error) -> int:
    """The exit status for a Tandem error raised here or answered by the server."""
    if isinstance(exc, RemoteError):
        cls = _all_error_classes().get(exc.remote_code)
        if cls is None or cls is errors.Error:
            return _status_by_http(exc.http_status)
        if issubclass(cls, errors.InputError) and exc.http_status not in {400, 413, 422}:
            return _status_by_http(exc.http_status)
        if exc.http_status >= 500 and not issubclass(cls, errors.SealedError | errors.AuditWriteError):
            return exit_codes.SERVER_ERROR
        kind = cls
    else:
        kind = type(exc)
    for base, status in _KINDS:
        if issubclass(kind, base):
            return status
    return exit_codes.REFUSED


def code_of(exc: errors.Error) -> str:
    return exc.remote_code if isinstance(exc, RemoteError) else exc.code


def hint(exc: errors.Error) -> str | None:
    """What to do next, where the code alone says it."""
    code = code_of(exc)
    details = exc.details or {}
    if code == "totp_replayed":
        wait = details.get("retry_in_seconds")
        if isinstance(wait, int):
            return f"wait {wait} s for your authenticator's next code, then run the command again"
        return "wait for your authenticator's next code (at most 30 s), then run the command again"
    if code == "totp_invalid":
        return (
            "type the 6 digits your authenticator shows now; if they are refused again, check "
            "the clock of the phone or computer running it"
        )
    if code == "totp_locked":
        return (
            "an operator can clear the lock with `tandem totp unlock MEMBER_ID` once they have "
            "confirmed by another channel that it is you"
        )
    if code == "invalid_session":
        return "run the command again (a session lasts 15 minutes)"
    if code == "not_pinned":
        return None  # the message says what to run
    if isinstance(exc, errors.ServerUnreachableError) or code == "unreachable":
        return None  # the message says what to check
    if code == "sealed":
        return (
            "the server found its audit log changed and stopped signing; its operator must "
            "look (`tandem verify audit` on an export names the entry)"
        )
    return None


def _label(status: int) -> str:
    return {
        exit_codes.UNREACHABLE: "cannot reach the server",
        exit_codes.SERVER_ERROR: "server error",
    }.get(status, "refused")


def report(exc: errors.Error) -> int:
    """Print ``exc`` for a person on stderr; return its exit status."""
    status = exit_status(exc)
    # A server older than this client may still say "a auditor".
    text = re.sub(r"\ba (?=auditor\b)", "an ", exc.diagnostics())
    # escape: diagnostics end in "[code, HTTP status]", which is not rich markup
    err_console.print(f"[bold red]{_label(status)}:[/] {escape(text)}")
    what = hint(exc)
    if what:
        err_console.print(f"  {escape(what)}")
    return status


def report_internal(exc: BaseException) -> int:
    """A fault in this program: where it happened, never its text or a traceback."""

    frames = traceback.extract_tb(exc.__traceback__)
    where = ""
    for frame in reversed(frames):
        if "/tandem/" in frame.filename.replace("\\", "/"):
            where = f" at {frame.filename.rsplit('/tandem/', 1)[-1]}:{frame.lineno}"
            break
    err_console.print(
        f"[bold red]internal error:[/] {escape(type(exc).__name__ + where)} \\[internal_error]\n"
        "  this is a fault in Tandem, not in what you typed; please report it with the command "
        "you ran (TANDEM_DEBUG=1 shows the full traceback)"
    )
    return exit_codes.INTERNAL


def _is_cli_framework(exc: BaseException) -> bool:
    """typer vendors its own click: its exceptions are recognised by where they live."""
    return type(exc).__module__.split(".")[0] in {"typer", "click"}


def settle(exc: Exception) -> int:
    """What ``exc`` means for a person: printed on stderr, with the exit status returned.
    typer's (and click's) own exits and usage errors are raised again for typer to finish,
    and so is a fault in this program under ``TANDEM_DEBUG=1``."""
    if _is_cli_framework(exc):
        if type(exc).__name__ == "Abort":  # a question met closed input, or Ctrl-C
            err_console.print("stopped: a question got no answer (end of input, or Ctrl-C); nothing was done")
            return exit_codes.INTERRUPTED
        raise exc  # typer's (or click's) own exits and usage errors
    if isinstance(exc, errors.Error):
        return report(exc)
    if os.environ.get("TANDEM_DEBUG"):
        raise exc
    return report_internal(exc)


def call(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` inside the boundary; every outcome other than success is a typer.Exit."""
    try:
        return fn()
    except KeyboardInterrupt:
        err_console.print("interrupted; nothing more was sent")
        raise typer.Exit(exit_codes.INTERRUPTED) from None
    except Exception as exc:
        raise typer.Exit(settle(exc)) from None


def guarded(fn: F) -> F:
    """``fn`` (a command callback) run inside the boundary, with its signature intact."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return call(lambda: fn(*args, **kwargs))

    wrapper.__tandem_guarded__ = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def guard_all(app: typer.Typer) -> None:
    """Put every command of ``app`` and its groups inside the boundary (once each)."""
    for info in app.registered_commands:
        if info.callback is not None and not getattr(info.callback, "__tandem_guarded__", False):
            info.callback = guarded(info.callback)
    if app.registered_callback is not None:
        cb = app.registered_callback.callback
        if cb is not None and not getattr(cb, "__tandem_guarded__", False):
            app.registered_callback.callback = guarded(cb)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            guard_all(group.typer_instance)
