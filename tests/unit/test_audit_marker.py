"""The signed "verified up to entry N, root R" marker start-up resumes from."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tandem.core import audit
from tandem.core.audit_marker import MARKER_DOMAIN, sign_marker, verify_marker
from tandem.core.canonical import domain_bytes
from tandem.core.service_key import ServiceKey
from tandem.errors import AuditVerificationError, InputError

ROOT = "ab" * 32
LAST = "cd" * 32


@pytest.fixture
def key() -> ServiceKey:
    return ServiceKey.generate()


def _marker(key: ServiceKey, **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "deployment": "dep_x",
        "tree_size": 42,
        "root": ROOT,
        "last_hash": LAST,
        "time": 1_790_000_000,
    }
    fields.update(overrides)
    return sign_marker(key.sign_seed, **fields)


def test_round_trip(key: ServiceKey) -> None:
    marker = verify_marker(_marker(key), key.sign_public)
    assert (marker.tree_size, marker.root, marker.last_hash) == (42, ROOT, LAST)
    assert marker.deployment == "dep_x"


@pytest.mark.parametrize(
    ("field", "value"),
    [("tree_size", 41), ("tree_size", 10**6), ("root", "00" * 32), ("last_hash", "ee" * 32), ("time", 1)],
)
def test_tampered_marker_is_refused(key: ServiceKey, field: str, value: Any) -> None:
    doc = _marker(key)
    doc["marker"][field] = value
    with pytest.raises(AuditVerificationError, match="does not verify"):
        verify_marker(doc, key.sign_public)


def test_marker_signed_by_another_key_is_refused(key: ServiceKey) -> None:
    other = ServiceKey.generate()
    with pytest.raises(AuditVerificationError, match="another key"):
        verify_marker(_marker(other), key.sign_public)


def test_marker_relabelled_with_our_key_id_is_refused(key: ServiceKey) -> None:
    other = ServiceKey.generate()
    doc = _marker(other)
    doc["marker"]["key_id"] = audit.key_id(key.sign_public)
    with pytest.raises(AuditVerificationError, match="does not verify"):
        verify_marker(doc, key.sign_public)


def test_a_checkpoint_cannot_pass_for_a_marker(key: ServiceKey) -> None:
    """The service signs a checkpoint on every append; the marker's own domain keeps one
    copied into the marker's place from saying "verified"."""
    checkpoint = audit.sign_checkpoint(
        key.sign_seed, deployment="dep_x", tree_size=42, root=ROOT, last_hash=LAST, time=1
    )
    doc = {"marker": checkpoint["checkpoint"], "signature": checkpoint["signature"]}
    with pytest.raises(AuditVerificationError, match="does not verify"):
        verify_marker(doc, key.sign_public)
    assert domain_bytes(MARKER_DOMAIN, doc["marker"]) != domain_bytes(
        audit.CHECKPOINT_DOMAIN, doc["marker"]
    )


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.pop("signature"),
        lambda d: d.__setitem__("extra", 1),
        lambda d: d["marker"].pop("root"),
        lambda d: d["marker"].__setitem__("root", "AB" * 32),
        lambda d: d["marker"].__setitem__("tree_size", -1),
        lambda d: d["marker"].__setitem__("tree_size", True),
        lambda d: d.__setitem__("signature", d["signature"].rstrip("=")),
        lambda d: d.__setitem__("signature", 7),
    ],
)
def test_malformed_marker_is_refused(key: ServiceKey, mutate: Any) -> None:
    doc = copy.deepcopy(_marker(key))
    mutate(doc)
    with pytest.raises(AuditVerificationError):
        verify_marker(doc, key.sign_public)


def test_not_a_document_is_refused(key: ServiceKey) -> None:
    for doc in (None, [], "marker", {"marker": None, "signature": ""}):
        with pytest.raises(AuditVerificationError):
            verify_marker(doc, key.sign_public)


def test_signing_refuses_nonsense(key: ServiceKey) -> None:
    with pytest.raises(InputError):
        _marker(key, root="zz")
    with pytest.raises(InputError):
        sign_marker(b"short", deployment="d", tree_size=1, root=ROOT, last_hash=LAST, time=1)
