"""What a member's machine trusts: its genesis pin, kept beside its keystore.

A pin is a small canonical JSON file, ``<keystore stem>.pin.json`` next to the keystore
(``alice.keystore`` -> ``alice.pin.json``), holding

- the deployment id, entity and **genesis hash** of the genesis document the member
  signed (``tandem genesis sign`` writes it) or imported against a hash it was told out
  of band (``tandem pin genesis FILE --expect HASH``);
- the service signing and sealing keys *that genesis names*: the only keys this
  machine ever seals a TOTP seed to or accepts an operation-key statement from;
- the key sets whose transcripts the member countersigned (``tandem ceremony
  countersign``) or verified offline and imported (``tandem pin keyset``): key ids and
  public keys, share commitments and DEK check, generation and transcript hash.

Nothing a server sends changes a pin. Before a share leaves the machine the client checks
that the server is the pinned deployment, that the operation key is signed by the pinned
service key, and that the key set it is shown is the one the member countersigned
(THREATS 22, 41). The service key is fixed by genesis (ADR 0008).
"""

from __future__ import annotations

import hmac
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tandem.core import ceremony as ceremony_core
from tandem.core import split
from tandem.core.canonical import canonical, check_fields, loads_strict
from tandem.core.identity import unhex
from tandem.core.membership import GENESIS_FORMAT, genesis_hash
from tandem.errors import (
    BadSignatureError,
    InputError,
    KeysetNotPinnedError,
    KeysetPinError,
    KeystoreError,
    NotPinnedError,
    PinError,
)

PIN_FORMAT = "tandem-pin/1"
PIN_SUFFIX = ".pin.json"
_MAX_PIN_BYTES = 4 << 20

__all__ = [
    "PIN_FORMAT",
    "PinnedDeployment",
    "PinnedKeyset",
    "pin_file_for",
    "pin_path",
    "remember_keystore",
]


def pin_path(keystore: Path) -> Path:
    """Where the pin of the keystore ``keystore`` lives: beside it, same stem."""
    return keystore.with_name(keystore.stem + PIN_SUFFIX)


# Which pin file belongs to which member on this machine. The CLI loads a keystore per
# command (``cli.common.load_member``) and records its pin here, so every client call of
# that command finds the member's own pin without each command passing it along.
_KEYSTORE_PINS: dict[str, Path] = {}


def remember_keystore(member_id: str, keystore: Path) -> None:
    _KEYSTORE_PINS[member_id] = pin_path(keystore)


def pin_file_for(member_id: str) -> Path | None:
    return _KEYSTORE_PINS.get(member_id)


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


@dataclass(frozen=True)
class PinnedKeyset:
    """The public facts of one key set as the member countersigned (or imported) them."""

    keyset: str
    generation: int
    transcript_hash: str
    commitments: Mapping[str, str]
    dek_check: str
    keys: Mapping[str, str]  # key id -> public key (hex)

    @classmethod
    def from_transcript(cls, transcript: Mapping[str, Any]) -> PinnedKeyset:
        """From a transcript already verified with ``core.ceremony.verify_transcript``."""
        keyset = transcript["keyset"]
        return cls(
            keyset=str(keyset["id"]),
            generation=int(keyset["generation"]),
            transcript_hash=ceremony_core.transcript_hash(transcript),
            commitments=dict(keyset["commitments"]),
            dek_check=str(keyset["dek_check"]),
            keys={str(k["key_id"]): str(k["public_key"]) for k in transcript["keys"]},
        )

    @classmethod
    def from_sealed(
        cls, sealed: split.SealedKeyset, *, generation: int, transcript_hash: str
    ) -> PinnedKeyset:
        return cls(
            keyset=sealed.keyset_id,
            generation=generation,
            transcript_hash=transcript_hash,
            commitments=dict(sealed.commitments),
            dek_check=sealed.dek_check,
            keys={k.key_id: k.public_key.hex() for k in sealed.keys},
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "keyset": self.keyset,
            "generation": self.generation,
            "transcript_hash": self.transcript_hash,
            "commitments": dict(self.commitments),
            "dek_check": self.dek_check,
            "keys": dict(self.keys),
        }

    @classmethod
    def from_json(cls, doc: Any) -> PinnedKeyset:
        d = check_fields(
            doc,
            required=("keyset", "generation", "transcript_hash", "commitments", "dek_check", "keys"),
            where="pinned key set",
        )
        commitments = check_fields(d["commitments"], required=split.SIDES, where="pinned commitments")
        if not isinstance(d["keys"], dict) or not isinstance(d["generation"], int):
            raise KeystoreError("pinned key set is malformed")
        return cls(
            keyset=str(d["keyset"]),
            generation=d["generation"],
            transcript_hash=str(d["transcript_hash"]),
            commitments={side: str(commitments[side]) for side in split.SIDES},
            dek_check=str(d["dek_check"]),
            keys={str(k): str(v) for k, v in d["keys"].items()},
        )

    def check(self, sealed: split.SealedKeyset) -> None:
        """Refuse a served key set that is not the one pinned: other commitments, DEK
        check, or keys (THREATS 41)."""
        served = {k.key_id: k.public_key.hex() for k in sealed.keys}
        same = (
            sealed.keyset_id == self.keyset
            and all(_same(sealed.commitments[s], self.commitments[s]) for s in split.SIDES)
            and _same(sealed.dek_check, self.dek_check)
            and served == dict(self.keys)
        )
        if not same:
            raise KeysetPinError(
                f"key set {self.keyset} as served differs from the one you countersigned "
                f"(generation {self.generation}, transcript {self.transcript_hash[:16]}); "
                "nothing was sealed",
                details={"keyset": self.keyset, "transcript_hash": self.transcript_hash},
            )


class PinnedDeployment:
    """A member's pinned genesis and key sets; see the module docstring."""

    def __init__(
        self,
        *,
        deployment: str,
        entity: str,
        genesis_hash: str,
        sign_public: bytes,
        seal_public: bytes,
        keysets: Mapping[str, PinnedKeyset] | None = None,
        path: Path | None = None,
    ) -> None:
        if len(sign_public) != 32 or len(seal_public) != 32:
            raise InputError("pinned service keys must be 32 bytes each")
        self.deployment = deployment
        self.entity = entity
        self.genesis_hash = genesis_hash
        self.sign_public = sign_public
        self.seal_public = seal_public
        self.keysets: dict[str, PinnedKeyset] = dict(keysets or {})
        self.path = path

    def __repr__(self) -> str:
        return f"PinnedDeployment({self.deployment!r}, genesis {self.genesis_hash[:16]}...)"

    def copy(self, *, path: Path | None = None) -> PinnedDeployment:
        """An independent copy (another machine of the same member, a test's own)."""
        return PinnedDeployment.from_json(self.to_json(), path=path)

    # --- making and storing a pin ------------------------------------------------------

    @classmethod
    def from_genesis(
        cls, doc: Any, *, expect_hash: str | None = None, path: Path | None = None
    ) -> PinnedDeployment:
        """Pin the genesis document ``doc`` held locally (never a server's copy alone).
        ``expect_hash``: the hash communicated out of band; a different one is refused."""
        top = check_fields(
            doc,
            required=("format", "deployment", "entity", "created_at", "service", "members"),
            optional=("policy", "address_book"),
            where="genesis",
        )
        if top["format"] != GENESIS_FORMAT:
            raise InputError(f"genesis.format must be {GENESIS_FORMAT}")
        service = check_fields(
            top["service"], required=("sign_public", "seal_public"), where="genesis.service"
        )
        root = genesis_hash(top)
        if expect_hash is not None and not _same(root, expect_hash.strip().lower()):
            raise PinError(
                f"this genesis document hashes to {root}, not to the hash you were given; nothing was pinned",
                details={"genesis_hash": root},
            )
        return cls(
            deployment=str(top["deployment"]),
            entity=str(top["entity"]),
            genesis_hash=root,
            sign_public=unhex(service["sign_public"], what="genesis.service.sign_public", length=32),
            seal_public=unhex(service["seal_public"], what="genesis.service.seal_public", length=32),
            path=path,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "format": PIN_FORMAT,
            "deployment": self.deployment,
            "entity": self.entity,
            "genesis_hash": self.genesis_hash,
            "service": {"sign_public": self.sign_public.hex(), "seal_public": self.seal_public.hex()},
            "keysets": {k: v.to_json() for k, v in sorted(self.keysets.items())},
        }

    @classmethod
    def from_json(cls, doc: Any, *, path: Path | None = None) -> PinnedDeployment:
        top = check_fields(
            doc,
            required=("format", "deployment", "entity", "genesis_hash", "service", "keysets"),
            where="pin",
        )
        if top["format"] != PIN_FORMAT:
            raise KeystoreError(f"not a {PIN_FORMAT} file")
        service = check_fields(top["service"], required=("sign_public", "seal_public"), where="pin.service")
        if not isinstance(top["keysets"], dict):
            raise KeystoreError("pin.keysets must be an object")
        return cls(
            deployment=str(top["deployment"]),
            entity=str(top["entity"]),
            genesis_hash=str(top["genesis_hash"]),
            sign_public=unhex(service["sign_public"], what="pin.service.sign_public", length=32),
            seal_public=unhex(service["seal_public"], what="pin.service.seal_public", length=32),
            keysets={k: PinnedKeyset.from_json(v) for k, v in top["keysets"].items()},
            path=path,
        )

    @classmethod
    def load(cls, path: Path) -> PinnedDeployment:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotPinnedError(
                f"no genesis pin at {path}: `tandem genesis sign` writes it; a member who "
                "joined later runs `tandem pin genesis FILE --expect HASH`"
            ) from None
        except OSError as exc:
            raise KeystoreError(f"cannot read pin {path}: {exc.strerror}") from None
        return cls.from_json(loads_strict(data, max_bytes=_MAX_PIN_BYTES), path=path)

    def save(self, path: Path | None = None) -> None:
        """Write atomically (a torn pin would fail closed, but need not happen)."""
        target = path or self.path
        if target is None:
            return
        self.path = target
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(canonical(self.to_json()) + b"\n")
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    # --- checks before anything leaves the machine ------------------------------------

    def check_served(self, info: Mapping[str, Any]) -> None:
        """Refuse a server whose deployment, genesis hash or service keys are not pinned."""
        served = info.get("service")
        service: Mapping[str, Any] = served if isinstance(served, dict) else {}
        problems = []
        if info.get("deployment") != self.deployment:
            problems.append(f"deployment {info.get('deployment')!r} is not the pinned {self.deployment!r}")
        if not _same(str(info.get("genesis_hash", "")), self.genesis_hash):
            problems.append("its genesis hash is not the pinned one")
        if not _same(str(service.get("sign_public", "")), self.sign_public.hex()):
            problems.append("its service signing key is not the one genesis names")
        if not _same(str(service.get("seal_public", "")), self.seal_public.hex()):
            problems.append("its service sealing key is not the one genesis names")
        if problems:
            raise PinError(
                "the server is not the deployment you pinned: "
                + "; ".join(problems)
                + "; nothing was sealed",
                details={"pinned_genesis_hash": self.genesis_hash},
            )

    def verify_operation(self, doc: Any) -> dict[str, Any]:
        """An operation-key statement signed by the pinned service key, or PinError."""
        try:
            return split.verify_operation(doc, self.sign_public)
        except BadSignatureError:
            raise PinError(
                "the operation key is not signed by the service key your genesis names; nothing was sealed"
            ) from None

    def keyset(self, keyset_id: str) -> PinnedKeyset:
        pinned = self.keysets.get(keyset_id)
        if pinned is None:
            raise KeysetNotPinnedError(
                f"you never countersigned or imported a transcript of key set {keyset_id}: verify "
                "its transcript with `tandem verify transcript` and import it with "
                "`tandem pin keyset`; nothing was sealed",
                details={"keyset": keyset_id},
            )
        return pinned

    def check_keyset(self, sealed_doc: Any, *, local_copy: bool = False) -> split.SealedKeyset:
        """Parse a sealed key-set document and check it against the pinned one. A
        ``local_copy`` (an export the member holds itself) may name a key set not yet
        pinned; one served by the server may not."""
        sealed = (
            split.SealedKeyset.from_json(sealed_doc)
            if isinstance(sealed_doc, str)
            else split.SealedKeyset.from_dict(sealed_doc)
        )
        if local_copy and sealed.keyset_id not in self.keysets:
            return sealed
        self.keyset(sealed.keyset_id).check(sealed)
        return sealed

    # --- recording what the member countersigned ----------------------------------------

    def add_keyset(self, pinned: PinnedKeyset) -> None:
        """Record ``pinned``; a lower generation than the one held (a rollback), or the
        same generation with another transcript, is refused."""
        held = self.keysets.get(pinned.keyset)
        if held is not None:
            if pinned.generation < held.generation:
                raise KeysetPinError(
                    f"key set {pinned.keyset}: generation {pinned.generation} is older than the "
                    f"pinned generation {held.generation}"
                )
            if pinned.generation == held.generation and pinned != held:
                raise KeysetPinError(
                    f"key set {pinned.keyset}: a second, different transcript of generation {held.generation}"
                )
        self.keysets[pinned.keyset] = pinned
        self.save()

    def add_transcript(self, transcript: Mapping[str, Any]) -> PinnedKeyset:
        """Pin the key set of a transcript of this deployment that verified."""
        if transcript.get("deployment") != self.deployment:
            raise PinError("the transcript is of another deployment than the one you pinned")
        pinned = PinnedKeyset.from_transcript(transcript)
        held = self.keysets.get(pinned.keyset)
        previous = transcript["keyset"].get("previous")
        if held is not None and isinstance(previous, dict) and held.generation == pinned.generation - 1:
            # A reshare names the generation it replaced: it must be the one pinned here.
            same = all(
                _same(str(previous.get("commitments", {}).get(s, "")), held.commitments[s])
                for s in split.SIDES
            ) and _same(str(previous.get("dek_check", "")), held.dek_check)
            if not same:
                raise KeysetPinError(
                    f"key set {pinned.keyset}: the reshare replaces a generation other than the "
                    "one you pinned"
                )
        self.add_keyset(pinned)
        return pinned

    def reseal(
        self,
        member: Any,
        sealed_doc: Any,
        operation_doc: Any,
        *,
        keyset_id: str | None = None,
        purpose: str | None = None,
        local_copy: bool = False,
    ) -> tuple[str, str]:
        """The one way a member's share leaves its machine for an operation: the
        operation key must be signed by the pinned service key (for ``keyset_id`` and
        ``purpose`` when given) and the key set must be the pinned one."""
        statement = self.verify_operation(operation_doc)
        if keyset_id is not None and statement["keyset"] != keyset_id:
            raise PinError(f"the operation key is for key set {statement['keyset']}, not {keyset_id}")
        if purpose is not None and statement["purpose"] != purpose:
            raise PinError(f"the operation key is a {statement['purpose']} key, not a {purpose} key")
        sealed = self.check_keyset(sealed_doc, local_copy=local_copy)
        return split.reseal_for_operation(member, sealed.to_dict(), operation_doc, self.sign_public)
