"""One way to say "this call is refused with that code", for every layer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tandem.errors import Error, RemoteError


def refused(code: str, fn: Callable[..., Any], *args: Any, match: str | None = None, **kwargs: Any) -> Error:
    """Call ``fn`` and return the refusal it raises, after checking its stable ``code``
    (a server's answer, :class:`RemoteError`, is read by its ``remote_code``) and, when
    the message is part of the contract, that it matches ``match``."""
    with pytest.raises(Error, match=match) as err:
        fn(*args, **kwargs)
    got = err.value.remote_code if isinstance(err.value, RemoteError) else err.value.code
    assert got == code, err.value.message
    return err.value
