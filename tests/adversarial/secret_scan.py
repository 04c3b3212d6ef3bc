"""Secret forms of test keys, and a scanner for the places a secret must never reach
(THREATS 16): log lines, responses, exception texts, reprs, audit entries, tables.

``secret_needles`` turns secret-holding objects into every text form a leak would
plausibly take: hex (either case), base64 (standard, URL-safe, unpadded, and at all
three byte alignments, so a key inside a longer base64 blob is found too), base32
(the TOTP seed's own form, either case, padded or not), and the raw bytes. ``scan``
looks for every needle in every blob and names each hit.

The scanner is indexed, so it stays fast with thousands of keys and megabytes of
text: every encoded form is a run of ``[A-Za-z0-9+/=_-]``, so only such runs of at
least ``MIN_NEEDLE`` characters are examined, each window looked up by its first
``MIN_NEEDLE`` characters. ``WholeRunScan`` uses it to watch an entire pytest run.
"""

from __future__ import annotations

import base64
import logging
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Shorter needles would risk matching by chance in a large blob.
MIN_NEEDLE = 16
_TOKEN_RUN = re.compile(f"[A-Za-z0-9+/=_-]{{{MIN_NEEDLE},}}")
_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=_-")


@dataclass(frozen=True)
class Needle:
    label: str  # whose secret and which: "alice.sign_seed"
    form: str  # "hex", "base64@1", "base32", "raw", ...
    text: str | None  # searched in text blobs
    raw: bytes | None  # searched in bytes blobs
    fold_case: bool = False


def _b64_aligned(raw: bytes, shift: int, alphabet: str) -> str:
    """The base64 characters that encode only bytes of ``raw`` when it starts ``shift``
    bytes into a longer encoded string."""
    encode = base64.urlsafe_b64encode if alphabet == "url" else base64.b64encode
    text = encode(b"\x00" * shift + raw).decode("ascii")
    first = -(-shift * 8 // 6)  # the first character whose 6 bits all come from raw
    last = (shift + len(raw)) * 8 // 6  # one past the last such character
    return text[first:last]


def forms_of_bytes(label: str, raw: bytes) -> list[Needle]:
    out = [
        Needle(label, "raw", None, raw),
        Needle(label, "hex", raw.hex(), None, fold_case=True),
        Needle(label, "base64", base64.b64encode(raw).decode(), None),
        Needle(label, "base64url", base64.urlsafe_b64encode(raw).decode().rstrip("="), None),
        Needle(label, "base32", base64.b32encode(raw).decode().rstrip("="), None, fold_case=True),
    ]
    for shift in (0, 1, 2):
        for alphabet in ("std", "url"):
            inner = _b64_aligned(raw, shift, alphabet)
            out.append(Needle(label, f"base64{'' if alphabet == 'std' else 'url'}@{shift}", inner, None))
    return out


def forms_of_base32_seed(label: str, seed: str) -> list[Needle]:
    """A TOTP seed is itself base32 text; HMAC uses the bytes it decodes to."""
    bare = seed.rstrip("=").upper()
    out = [Needle(label, "base32-seed", bare, None, fold_case=True)]
    padded = bare + "=" * (-len(bare) % 8)
    out += forms_of_bytes(label + ".decoded", base64.b32decode(padded))
    return out


def needles_of(holder: Any) -> list[Needle]:
    """The needles of one MemberSecrets or ServiceKey (duck-typed by class name)."""
    cls = type(holder).__name__
    if cls == "MemberSecrets":
        name = holder.name
        return [
            *forms_of_bytes(f"{name}.sign_seed", bytes(holder._sign)),
            *forms_of_bytes(f"{name}.sign_secret64", bytes(holder._sign._signing_key)),
            *forms_of_bytes(f"{name}.seal_private", bytes(holder.seal_private_key)),
            *forms_of_base32_seed(f"{name}.totp_secret", holder.totp_secret),
        ]
    if cls == "ServiceKey":
        return [
            *forms_of_bytes("service.sign_seed", holder.sign_seed),
            *forms_of_bytes("service.seal_private", bytes(holder._seal)),
        ]
    raise TypeError(f"do not know the secrets of a {cls}")


def secret_needles(*holders: Any, passphrases: Iterable[str] = ()) -> list[Needle]:
    """Every needle for MemberSecrets / ServiceKey objects and passphrases."""
    needles: list[Needle] = []
    for h in holders:
        needles += needles_of(h)
    for i, p in enumerate(passphrases):
        needles.append(Needle(f"passphrase{i}", "text", p, p.encode("utf-8")))
    short = [n for n in needles if len(n.text or "") < MIN_NEEDLE and len(n.raw or b"") < MIN_NEEDLE]
    if short:
        raise ValueError(f"needles too short to scan for reliably: {[(n.label, n.form) for n in short]}")
    return needles


class _Index:
    def __init__(self, needles: Iterable[Needle]) -> None:
        self.by_prefix: dict[str, list[Needle]] = defaultdict(list)
        self.by_raw_prefix: dict[bytes, list[Needle]] = defaultdict(list)
        self.plain: list[Needle] = []  # texts with characters outside the token alphabet
        for n in needles:
            if n.text is not None:
                if set(n.text) <= _TOKEN_CHARS:
                    self.by_prefix[n.text[:MIN_NEEDLE].lower()].append(n)
                else:
                    self.plain.append(n)
            if n.raw is not None and n.text is None:
                self.by_raw_prefix[n.raw[:MIN_NEEDLE]].append(n)

    def text_hits(self, text: str) -> list[Needle]:
        found: list[Needle] = []
        for match in _TOKEN_RUN.finditer(text):
            run = match.group()
            folded = run.lower()
            for i in range(len(run) - MIN_NEEDLE + 1):
                for n in self.by_prefix.get(folded[i : i + MIN_NEEDLE], ()):
                    assert n.text is not None
                    width = len(n.text)
                    if (
                        (folded[i : i + width] == n.text.lower())
                        if n.fold_case
                        else (run[i : i + width] == n.text)
                    ):
                        found.append(n)
        found += [n for n in self.plain if n.text is not None and n.text in text]
        return found

    def raw_hits(self, blob: bytes) -> list[Needle]:
        found: list[Needle] = []
        for i in range(len(blob) - MIN_NEEDLE + 1):
            for n in self.by_raw_prefix.get(blob[i : i + MIN_NEEDLE], ()):
                assert n.raw is not None
                if blob[i : i + len(n.raw)] == n.raw:
                    found.append(n)
        return found


def scan(blobs: Mapping[str, str | bytes], needles: Iterable[Needle]) -> list[str]:
    """``where: label form`` for every needle found in a blob.

    Bytes are scanned as UTF-8 text when they decode (32 random key bytes decode as
    UTF-8 with negligible probability, so raw keys leave a blob undecodable) and
    byte by byte for raw keys otherwise; passphrases are looked for in both forms.
    """
    index = _Index(needles)
    hits: list[str] = []
    for where, blob in blobs.items():
        found: list[Needle]
        if isinstance(blob, bytes):
            try:
                found = index.text_hits(blob.decode("utf-8"))
            except UnicodeDecodeError:
                found = index.raw_hits(blob) + index.text_hits(blob.decode("latin-1"))
        else:
            found = index.text_hits(blob)
        hits += sorted({f"{where}: {n.label} {n.form}" for n in found})
    return hits


# --- a whole pytest run ----------------------------------------------------------------------------


class _Collect(logging.Handler):
    def __init__(self, sink: Callable[[str, str], None]) -> None:
        super().__init__(level=logging.DEBUG)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:
            text = str(record.msg)
        self.sink(f"log {record.name}", f"{text}\n{record.exc_text or ''}")


@dataclass
class WholeRunScan:
    """Watches a whole pytest run: every MemberSecrets and ServiceKey constructed, every
    keystore passphrase used, every log record, every HTTP response body an
    ``httpx.Client`` (and so the FastAPI TestClient) receives, and the text of every
    Tandem ``Error`` raised. ``finish()`` returns the hits.

    Wire it in the root conftest (each xdist worker then scans what it ran)::

        from tests.adversarial.secret_scan import WholeRunScan

        _SCAN = WholeRunScan()

        def pytest_configure(config):
            _SCAN.start()

        def pytest_sessionfinish(session, exitstatus):
            hits = _SCAN.finish()
            if hits:
                print("secrets leaked:\\n" + "\\n".join(hits[:50]))
                session.exitstatus = 1

    Over the whole suite (about 2,600 keys and 26,000 blobs) the scan takes seconds.
    """

    holders: list[Any] = field(default_factory=list)
    passphrases: set[str] = field(default_factory=set)
    blobs: dict[str, str | bytes] = field(default_factory=dict)
    _undo: list[Callable[[], None]] = field(default_factory=list)

    def add(self, where: str, blob: str | bytes) -> None:
        self.blobs[f"{len(self.blobs):07d} {where}"] = blob

    def _patch(self, owner: Any, name: str, wrapper: Callable[[Any], Any]) -> None:
        original = getattr(owner, name)
        setattr(owner, name, wrapper(original))
        self._undo.append(lambda: setattr(owner, name, original))

    def start(self) -> None:
        import httpx

        from tandem.core.identity import MemberSecrets
        from tandem.core.service_key import ServiceKey
        from tandem.errors import Error

        def record_holder(init: Any) -> Any:
            def wrapped(obj: Any, *args: Any, **kwargs: Any) -> None:
                init(obj, *args, **kwargs)
                self.holders.append(obj)

            return wrapped

        def record_passphrase(fn: Any, position: int) -> Any:
            def wrapped(*args: Any, **kwargs: Any) -> Any:
                passphrase = kwargs.get("passphrase", args[position] if len(args) > position else None)
                if isinstance(passphrase, str) and len(passphrase) >= MIN_NEEDLE:
                    self.passphrases.add(passphrase)
                return fn(*args, **kwargs)

            return wrapped

        def record_response(send: Any) -> Any:
            def wrapped(client: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
                response = send(client, request, *args, **kwargs)
                try:
                    response.read()
                    self.add(f"response {request.method} {request.url}", response.content)
                except Exception:  # noqa: S110 - streaming bodies are read by their owner
                    pass
                return response

            return wrapped

        def record_error(init: Any) -> Any:
            def wrapped(exc: Any, *args: Any, **kwargs: Any) -> None:
                init(exc, *args, **kwargs)
                self.add(f"error {type(exc).__name__}", str(exc) + repr(getattr(exc, "details", "")))

            return wrapped

        self._patch(MemberSecrets, "__init__", record_holder)
        self._patch(ServiceKey, "__init__", record_holder)
        self._patch(MemberSecrets, "to_keystore", lambda fn: record_passphrase(fn, 1))
        from_keystore = MemberSecrets.__dict__["from_keystore"].__func__
        MemberSecrets.from_keystore = classmethod(record_passphrase(from_keystore, 2))  # type: ignore[method-assign]
        self._undo.append(lambda: setattr(MemberSecrets, "from_keystore", classmethod(from_keystore)))
        self._patch(httpx.Client, "send", record_response)
        self._patch(Error, "__init__", record_error)
        handler = _Collect(self.add)
        logging.getLogger().addHandler(handler)
        self._undo.append(lambda: logging.getLogger().removeHandler(handler))

    def finish(self) -> list[str]:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()
        for h in self.holders:
            self.add(f"repr {type(h).__name__}", repr(h))
        needles = [n for h in self.holders for n in needles_of(h)]
        needles += [Needle(f"passphrase{i}", "text", p, None) for i, p in enumerate(sorted(self.passphrases))]
        return scan(self.blobs, needles)
