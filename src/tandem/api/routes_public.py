"""Session-less reads of the files that verify themselves offline (ADR 0012).

An auditor who holds the pinned genesis (and so the service key it names) needs no
server session to fetch: the signed audit checkpoint, RFC 6962 inclusion and
consistency proofs (hashes only, as a Certificate Transparency log serves them), a
completed proof-of-ownership bundle, and a keygen ceremony's transcript. Each answer
is checked by the reader against the signatures it carries, so the server's word adds
nothing and its absence of a session takes nothing away.

What names clients or amounts (the audit export and its entries, statements, the
register) stays behind a session. Every route here answers one object named by its id
or size, never a list, and each caller's address is held to a small request rate; a
refusal takes the application's one error path, so it is audited like any other.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from tandem.api.public_models import CheckpointPublic, ConsistencyPublic, InclusionPublic, TranscriptPublic
from tandem.core.ceremony import CEREMONY_ID
from tandem.errors import InputError, NotPublicError, RateLimitedError
from tandem.services import Tandem

PREFIX = "/v1/public"
CHALLENGE_ID = re.compile(r"pc_[0-9a-f]{16,32}")
# Fields that carry key material, sealed or not. A transcript holding any of them (a
# reshare's signed actions carry each side's share sealed to the operation key) is not
# served here: the signatures cover those fields, so they cannot be cut out.
SECRET_FIELDS = frozenset({"sealed_share", "sealed", "share", "seed", "private_key", "dek"})
# Per caller address: a burst of RATE_BURST, refilled at RATE_PER_MINUTE.
RATE_PER_MINUTE = 120
RATE_BURST = 60
MAX_TRACKED_ADDRESSES = 10_000


class PublicRateLimit:
    """A token bucket per caller address, in this process's memory.

    Only the first refusal of a run of refusals to one address is recorded in the audit
    log (the run ends when a request is let through again): an unauthenticated flood
    must not write one log entry per request, so what it can write is bounded by the
    refill rate."""

    def __init__(
        self,
        *,
        per_minute: int = RATE_PER_MINUTE,
        burst: int = RATE_BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_minute < 1 or burst < 1:
            raise ValueError("a rate limit needs at least one request")
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.clock = clock
        self._lock = threading.Lock()
        # address -> (tokens, last refill, refusals in the current run)
        self._buckets: dict[str, tuple[float, float, int]] = {}

    def check(self, address: str) -> None:
        now = self.clock()
        with self._lock:
            tokens, last, unrecorded = self._buckets.get(address, (self.burst, now, 0))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._remember(address, (tokens - 1.0, now, 0))
                return
            self._remember(address, (tokens, now, unrecorded + 1))
        wait = max(1, int((1.0 - tokens) / self.rate) + 1)
        exc = RateLimitedError(
            f"too many requests from this address; try again in {wait} s",
            details={"retry_in_seconds": wait},
        )
        if unrecorded > 0:
            exc.audited = True  # one recorded refusal stands for the run
        raise exc

    def _remember(self, address: str, bucket: tuple[float, float, int]) -> None:
        if address not in self._buckets and len(self._buckets) >= MAX_TRACKED_ADDRESSES:
            # Forget the oldest entry rather than grow without bound.
            self._buckets.pop(next(iter(self._buckets)))
        self._buckets[address] = bucket


def _limiter(request: Request) -> PublicRateLimit:
    state = request.app.state
    limiter = getattr(state, "public_rate_limit", None)
    if limiter is None:
        limiter = state.public_rate_limit = PublicRateLimit()
    return limiter


def rate_limited(request: Request) -> None:
    address = request.client.host if request.client is not None else "unknown"
    _limiter(request).check(address)


def service(request: Request) -> Tandem:
    svc: Tandem = request.app.state.service
    return svc


Service = Annotated[Tandem, Depends(service)]

router = APIRouter(prefix=PREFIX, tags=["public"], dependencies=[Depends(rate_limited)])


@router.get("/checkpoint", response_model=CheckpointPublic)
def checkpoint(svc: Service, tree_size: Annotated[int | None, Query(ge=1)] = None) -> dict[str, Any]:
    """The signed audit checkpoint (latest, or of `tree_size`): deployment, size, Merkle
    root, last entry hash, time, signed by the service key the genesis names."""
    return svc.audit.checkpoint(tree_size)


@router.get("/inclusion/{index}", response_model=InclusionPublic)
def inclusion(
    index: int, svc: Service, tree_size: Annotated[int | None, Query(ge=1)] = None
) -> dict[str, Any]:
    """RFC 6962 inclusion proof of entry `index`: its leaf hash, the audit path and the
    signed checkpoint of the tree. The entry itself is not here (it may name a client);
    whoever holds it checks its `hash` field equals `leaf_hash`."""
    doc = svc.audit.inclusion(index, tree_size)
    return {
        "index": doc["index"],
        "tree_size": doc["tree_size"],
        "leaf_hash": doc["entry"]["hash"],
        "proof": doc["proof"],
        "checkpoint": doc["checkpoint"],
    }


@router.get("/consistency", response_model=ConsistencyPublic)
def consistency(
    svc: Service, old: Annotated[int, Query(ge=1)], new: Annotated[int, Query(ge=1)]
) -> dict[str, Any]:
    """RFC 6962 consistency proof between the signed checkpoints of sizes `old` and `new`."""
    return svc.audit.consistency(old, new)


@router.get(
    "/proofs/{challenge_id}/bundle",
    response_class=Response,
    responses={200: {"content": {"application/json": {}}}},
)
def proof_bundle(challenge_id: str, svc: Service) -> Response:
    """A completed proof-of-ownership bundle, byte for byte as hashed; its SHA-256 is in
    X-Tandem-Bundle-Hash and in the audit log. Its proofs are signed messages meant to
    be shown to whoever checks the custodian's holdings."""
    if not CHALLENGE_ID.fullmatch(challenge_id):
        raise InputError("a proof challenge id is pc_ and 16 to 32 lowercase hex digits")
    text, digest = svc.proofs.get_proof_bundle(challenge_id)
    return Response(
        content=text.encode("utf-8"),
        media_type="application/json",
        headers={"X-Tandem-Bundle-Hash": digest},
    )


@router.get("/ceremonies/{ceremony_id}/transcript", response_model=TranscriptPublic)
def transcript(ceremony_id: str, svc: Service) -> dict[str, Any]:
    """A keygen ceremony's transcript: signed actions, commitments and reveals, public
    keys, addresses and birth proofs, countersignatures. A transcript that carries key
    material (a reshare's sealed shares) is refused here; members read it with a session."""
    if not CEREMONY_ID.fullmatch(ceremony_id):
        raise InputError("a ceremony id is cer_ and 16 to 32 lowercase hex digits")
    doc = svc.ceremonies.get_transcript(ceremony_id)
    field = secret_field(doc)
    if field is not None:
        raise NotPublicError(
            f"the transcript of {ceremony_id} carries key material ({field}); read it with a "
            "session: `tandem ceremony transcript` with a member's keystore"
        )
    return doc


def secret_field(value: Any) -> str | None:
    """The first field of ``value`` (at any depth) named in :data:`SECRET_FIELDS`."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, inner in item.items():
                if key in SECRET_FIELDS:
                    return str(key)
                stack.append(inner)
        elif isinstance(item, list):
            stack.extend(item)
    return None
