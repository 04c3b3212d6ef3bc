"""The CLI's exit statuses: one number per kind of outcome, so a script can tell a
refusal from a typo, a missing object, a race and a server that is not there.

``EPILOG`` is what ``tandem --help`` prints about them; docs/cli.md says the same.
"""

from __future__ import annotations

OK = 0
# The server, or this machine's own checks, said no: authentication, TOTP, role, policy,
# a signature or a verification that failed, a pin that does not match, a setting missing.
REFUSED = 1
# What you typed or the file you gave is wrong: a usage error, malformed JSON, an amount,
# address or option value that does not parse (click's own usage errors exit 2 as well).
BAD_INPUT = 2
# The withdrawal, proposal, ceremony, member or file named does not exist.
NOT_FOUND = 3
# The object is not in a state that allows this (already released, already approved,
# replayed, changed meanwhile): look at it again before retrying.
CONFLICT = 4
# The server could not be reached: connection refused, a URL without http:// or https://,
# a name that does not resolve, a timeout or a TLS failure. Nothing was decided.
UNREACHABLE = 5
# The server answered with an internal error or is sealed; its operator must look.
SERVER_ERROR = 6
# A fault in this program (a bug); the message says where, without a traceback.
INTERNAL = 70
# Ctrl-C, or a question (a prompt, a confirmation) that met closed input.
INTERRUPTED = 130

MEANINGS: tuple[tuple[int, str], ...] = (
    (OK, "done"),
    (REFUSED, "refused (authentication, TOTP, role, policy, a failed verification or pin)"),
    (BAD_INPUT, "bad input (usage, a malformed file or value)"),
    (NOT_FOUND, "not found"),
    (CONFLICT, "conflict (already done, replayed, or changed meanwhile)"),
    (UNREACHABLE, "server unreachable (connection, URL, timeout, TLS)"),
    (SERVER_ERROR, "server error or sealed server"),
    (INTERNAL, "internal error in this program"),
    (INTERRUPTED, "interrupted (Ctrl-C, or a question with no answer)"),
)

EPILOG = "Exit status: " + "; ".join(f"{code} {text}" for code, text in MEANINGS) + "."
