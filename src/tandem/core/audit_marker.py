"""The signed "verified up to entry N, root R" marker that start-up resumes from.

Start-up used to re-verify the whole chain, which grows without bound. Instead the
service signs, with its own key, how far it has verified::

    {"marker": {deployment, tree_size, root, last_hash, time, key_id},
     "signature": base64 Ed25519 over domain_bytes("audit-verified-marker", marker)}

``tree_size`` entries were verified; ``last_hash`` is entry ``tree_size - 1``'s hash and
``root`` the RFC 6962 root over the first ``tree_size`` entries; ``time`` is when. The
domain differs from the checkpoint's on purpose: the service signs a checkpoint on
every append, so a checkpoint says "written", never "verified", and one copied into
the marker's place must not pass for a marker.

What the marker does not do: an entry before N edited in place, with its stored hash
column left alone or rewritten, is not re-read at start-up. The marker binds entry
N - 1's hash and the root at N, so an edit that re-hashes the chain through N - 1 is
caught; anything else before N is caught by ``tandem audit verify --full`` and by
every offline verification of an export (docs/adr/0010).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tandem.core.audit import TreeHeadKind, sign_tree_head, verify_tree_head
from tandem.errors import AuditVerificationError

MARKER_DOMAIN = "audit-verified-marker"


@dataclass(frozen=True)
class VerifiedMarker:
    """A marker whose signature has verified under the service key."""

    deployment: str
    tree_size: int
    root: str
    last_hash: str
    time: int


MARKER = TreeHeadKind(
    member="marker",
    domain=MARKER_DOMAIN,
    label="verified-up-to marker",
    document="verified-up-to marker",
    key="the service key",
    signature_error=AuditVerificationError,
)


def sign_marker(
    private_key_raw32: bytes,
    *,
    deployment: str,
    tree_size: int,
    root: str,
    last_hash: str,
    time: int,
) -> dict[str, Any]:
    """A signed marker document (root and last_hash as hex)."""
    return sign_tree_head(
        MARKER,
        private_key_raw32,
        deployment=deployment,
        tree_size=tree_size,
        root=root,
        last_hash=last_hash,
        time=time,
    )


def verify_marker(doc: Any, public_key_raw32: bytes) -> VerifiedMarker:
    """The marker of ``doc`` once its signature verifies under ``public_key_raw32``;
    :class:`AuditVerificationError` naming what is wrong otherwise."""
    body = verify_tree_head(MARKER, doc, public_key_raw32)
    return VerifiedMarker(
        deployment=body["deployment"],
        tree_size=body["tree_size"],
        root=body["root"],
        last_hash=body["last_hash"],
        time=body["time"],
    )
