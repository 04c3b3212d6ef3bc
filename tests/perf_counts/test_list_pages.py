"""Every list comes in cursor pages: a walk sees every row once, the status filter
runs in SQL, and a page costs the same statements whatever the table holds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from sqlmodel import col, select
from tests.conftest import World
from tests.helpers.withdrawals import btc_intent, setup
from tests.perf_counts.sql_counter import SqlCounter

from tandem.api.app import ROUTERS
from tandem.api.deps import api_routes, page_query
from tandem.core import keygen
from tandem.core.canonical import canonical
from tandem.core.membership import book_removal_content
from tandem.errors import RemoteError
from tandem.store import audit_log, pages
from tandem.store.models import (
    AddressBookRow,
    AddressRow,
    Approval,
    AuditRow,
    Ceremony,
    KeyRow,
    KeySet,
    Member,
    ProofChallenge,
    Proposal,
    ReconcileJob,
    Withdrawal,
)


def _copies(world: World, n: int, *, start: int = 0) -> None:
    """``n`` more rows shaped exactly like the first real withdrawal, some sharing a
    creation time (the cursor's tie-break on id is exercised)."""
    with world.svc.db.write() as session:
        template = session.exec(select(Withdrawal)).first()
        assert template is not None
        fields = template.model_dump()
        for i in range(start, start + n):
            row = dict(fields, id=f"wd_copy{i:05d}", created_at=template.created_at + i // 3)
            row["status"] = "pending" if i % 2 else "rejected"
            session.add(Withdrawal(**row))


def _page(world: World, **params: Any) -> tuple[list[dict[str, Any]], str | None]:
    seen: list[str | None] = []
    token = world.client.session(world["olga"])
    body = world.client.request("GET", "/v1/withdrawals", token=token, params=params, next_cursor=seen)
    return body, seen[0]


def test_every_list_route_takes_the_one_page_query() -> None:
    """Every GET route that answers a list pages it through ``PageQuery``: the same
    ``limit`` and ``cursor`` parameters, the same bounds, the same next-page header."""
    app = FastAPI()
    for router in ROUTERS:
        app.include_router(router)
    lists = [
        r
        for r in api_routes(app)
        if "GET" in r.methods and getattr(r.response_model, "__origin__", None) is list
    ]
    assert len(lists) >= 15
    unpaged = [r.path for r in lists if page_query not in [d.call for d in r.dependant.dependencies]]
    assert unpaged == []
    for route in lists:
        names = [p.name for p in route.dependant.query_params]
        assert not {"limit", "cursor"} & set(names), route.path  # only through the page


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_walk_250_withdrawals_in_pages_without_dupes_or_misses(world: World) -> None:
    s = setup(world)
    world.client.withdrawals.create(world["alice"], btc_intent(s))
    _copies(world, 249)
    with world.svc.db.read() as session:
        expected = [
            r.id for r in sorted(session.exec(select(Withdrawal)).all(), key=lambda r: (r.created_at, r.id))
        ]
    assert len(expected) == 250

    walked: list[str] = []
    cursor: str | None = None
    sizes = []
    while True:
        body, cursor = _page(world, limit=40, **({"cursor": cursor} if cursor else {}))
        sizes.append(len(body))
        walked.extend(w["id"] for w in body)
        if cursor is None:
            break
    assert walked == expected
    assert sizes == [40] * 6 + [10]

    # The default page is 100 and the cap 500; the client's helper follows the cursors.
    first, cursor = _page(world)
    assert len(first) == pages.DEFAULT_LIMIT
    assert cursor is not None
    assert [w["id"] for w in world.client.withdrawals.list(world["olga"])] == expected
    pending = world.client.withdrawals.list(world["olga"], status="pending")
    assert [w["id"] for w in pending] == [
        i for i in expected if not i.startswith("wd_copy") or int(i[7:]) % 2
    ]
    assert all(w["status"] == "pending" for w in pending)
    assert world.client.withdrawals.list(world["olga"], status="expired") == []


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 501},
        {"cursor": "not-a-cursor"},
        {"cursor": pages.encode_cursor("ceremonies", [1, "x"])},
    ],
)
def test_bad_page_parameters_are_refused(world: World, params: dict[str, Any]) -> None:
    with pytest.raises(RemoteError) as err:
        _page(world, **params)
    assert err.value.remote_code == "invalid_input"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_list_page_sql_count_does_not_grow_with_rows(world: World) -> None:
    s = setup(world)
    created = world.client.withdrawals.create(world["alice"], btc_intent(s))
    world.client.withdrawals.approve(world["bob"], created["id"], totp=world.code("bob"))
    _copies(world, 4)
    counter = SqlCounter(world.svc, world.client)
    try:
        world.client.session(world["olga"])
        body, _ = _page(world)
        assert len(body) == 5
        small = counter.total()
        counter.reset()
        _copies(world, 45, start=4)
        body, _ = _page(world)
        assert len(body) == 50
        (real,) = [w for w in body if w["id"] == created["id"]]
        assert [a["member"] for a in real["approvals"]] == [world["bob"].member_id]
        large = counter.total()
    finally:
        counter.close()
    assert small == large, (small, large)
    print(f"SQL statements per list page: {large}")


# --- every other list ---------------------------------------------------------------------------
#
# Each list below is grown past a few pages by copying a real row (and its related rows:
# approvals, keys, addresses) so the cost of a page can be compared at 5 and at 50 rows.


@dataclass(frozen=True)
class Listing:
    path: str
    key: str  # what names an item in the answer
    grow: Callable[[World, int], None]
    order: Callable[[World], list[Any]]  # every item's key, in the list's order
    statuses: tuple[str, ...] = ()


def _copy_rows(world: World, model: Any, n: int, tweak: Callable[[dict[str, Any], int], None]) -> None:
    with world.svc.db.write() as session:
        template = session.exec(select(model).order_by(col(model.created_at), col(model.id))).first()
        assert template is not None
        fields = template.model_dump()
        for i in range(n):
            row = dict(fields, id=f"zz_copy{i:05d}", created_at=fields["created_at"] + i // 3)
            tweak(row, i)
            session.add(model(**row))


def _by_creation(model: Any) -> Callable[[World], list[Any]]:
    def order(world: World) -> list[Any]:
        with world.svc.db.read() as session:
            rows = session.exec(select(model).order_by(col(model.created_at), col(model.id))).all()
            return [r.id for r in rows]

    return order


def _grow_proposals(world: World, n: int) -> None:
    with world.svc.db.write() as session:
        given = session.exec(select(Approval).order_by(col(Approval.id))).first()
        assert given is not None
        template = session.get(Proposal, given.subject)
        assert template is not None
        fields, approval = template.model_dump(), given.model_dump()
        for i in range(n):
            pid = f"zz_copy{i:05d}"
            status = ("pending", "rejected", fields["status"])[i % 3]
            session.add(
                Proposal(**dict(fields, id=pid, status=status, created_at=fields["created_at"] + i // 3))
            )
            session.add(Approval(**dict(approval, id=None, subject=pid)))


def _grow_ceremonies(world: World, n: int) -> None:
    text = (Path(__file__).resolve().parents[2] / "ceremonies" / "bitcoin-testnet-cold.toml").read_text(
        "utf-8"
    )
    world.client.ceremonies.propose(world["alice"], text, contribution=keygen.make_contribution())
    now = world.svc.clock()

    def tweak(row: dict[str, Any], i: int) -> None:
        # a third open, a third open but past its expiry (reads "expired"), a third as made
        if i % 3 == 0:
            row.update(status="proposed", expires_at=now + 3600)
        elif i % 3 == 1:
            row.update(status="proposed", expires_at=now - 1)
        else:
            row.update(status="rejected")

    _copy_rows(world, Ceremony, n, tweak)


def _grow_keysets(world: World, n: int) -> None:
    with world.svc.db.write() as session:
        template = session.exec(select(KeySet)).first()
        assert template is not None
        keys = session.exec(select(KeyRow).where(KeyRow.keyset == template.id)).all()
        addresses = session.exec(select(AddressRow).where(AddressRow.keyset == template.id)).all()
        fields = template.model_dump()
        for i in range(n):
            ks = f"zz_copy{i:05d}"
            session.add(KeySet(**dict(fields, id=ks, created_at=fields["created_at"] + i // 3)))
            for k in keys:
                session.add(KeyRow(**dict(k.model_dump(), id=f"{ks}-{k.id}"[:64], keyset=ks)))
            for a in addresses:
                session.add(
                    AddressRow(**dict(a.model_dump(), id=None, keyset=ks, address=f"{a.address}-{i}"))
                )


def _grow_proofs(world: World, n: int) -> None:
    if not world.client.proofs.list(world["olga"]):
        world.client.proofs.issue(world["olga"], statement="Q3", scope={"kind": "all"})
    now = world.svc.clock()

    def tweak(row: dict[str, Any], i: int) -> None:
        row.update(nonce=f"copy-{i:05d}", status="open", expires_at=now - 1 if i % 2 else now + 3600)

    _copy_rows(world, ProofChallenge, n, tweak)


def _grow_members(world: World, n: int) -> None:
    with world.svc.db.write() as session:
        template = session.get(Member, world["olga"].member_id)
        assert template is not None
        fields = template.model_dump()
        for i in range(n):
            session.add(
                Member(
                    **dict(
                        fields,
                        id=f"zz_copy{i:05d}",
                        name=f"copy {i}",
                        sign_public=f"{i:064x}",
                        seal_public=f"{i + 1_000_000:064x}",
                        status="removed" if i % 2 else "active",
                        added_at=fields["added_at"] + i // 3,
                    )
                )
            )


def _member_order(world: World) -> list[Any]:
    with world.svc.db.read() as session:
        return [
            m.id for m in session.exec(select(Member).order_by(col(Member.added_at), col(Member.id))).all()
        ]


def _grow_logged(kind: str) -> Callable[[World, int], None]:
    """Real entries through the log's own append: the chain stays whole."""

    def grow(world: World, n: int) -> None:
        now = world.svc.clock()
        with world.svc.db.write() as session:
            deployment = world.svc.runner.deployment(session).id
            records = [
                audit_log.Record(kind, None, "ok", None, None, {"report_hash": f"{i:064x}"}, now)
                for i in range(n)
            ]
            audit_log.append_batch(session, world.svc.key, deployment=deployment, records=records)

    return grow


def _logged_order(kind: str) -> Callable[[World], list[Any]]:
    def order(world: World) -> list[Any]:
        with world.svc.db.read() as session:
            return [
                r.seq
                for r in session.exec(
                    select(AuditRow).where(AuditRow.kind == kind).order_by(col(AuditRow.seq))
                ).all()
            ]

    return order


def _grow_jobs(world: World, n: int) -> None:
    """Finished background reconciliations, some started in the same second."""
    now = world.svc.clock()
    with world.svc.db.write() as session:
        for i in range(n):
            at = now - 3600 + i // 3
            session.add(
                ReconcileJob(
                    id=f"rj_copy{i:05d}", state="done", done=1, total=1, runner="run_gone",
                    started_at=at, heartbeat_at=at, finished_at=at,
                )
            )  # fmt: skip


def _jobs_newest_first(world: World) -> list[Any]:
    with world.svc.db.read() as session:
        order = (col(ReconcileJob.started_at).desc(), col(ReconcileJob.id).desc())
        return [r.id for r in session.exec(select(ReconcileJob).order_by(*order)).all()]


def _grow_book(world: World, n: int) -> None:
    """Copies of an entry, some taking effect in the same second; of every three, one
    removed already, one whose removal is still in its delay, one left as it is."""
    now = world.svc.clock()
    with world.svc.db.write() as session:
        template = session.exec(select(AddressBookRow).order_by(col(AddressBookRow.id))).first()
        assert template is not None
        added = session.get(Proposal, template.proposal)
        assert added is not None
        fields, proposal = template.model_dump(), added.model_dump()
        for i in range(n):
            entry = AddressBookRow(
                **dict(
                    fields,
                    id=f"zz_copy{i:05d}",
                    address=f"{fields['address']}-{i}",
                    effective_at=now - 600 + i // 3,
                )
            )
            session.add(entry)
            if i % 3 == 2:
                continue
            content = book_removal_content(
                entry.id, {"address": entry.address, "chain": entry.chain, "network": entry.network}
            )
            session.add(
                Proposal(
                    **dict(
                        proposal,
                        id=f"zz_removal{i:05d}",
                        kind="addressbook.remove",
                        body=canonical(content).decode(),
                        status="approved",
                        effective_at=now - 1 if i % 3 == 0 else now + 3600,
                    )
                )
            )


def _book_order(world: World) -> list[Any]:
    with world.svc.db.read() as session:
        order = (col(AddressBookRow.effective_at), col(AddressBookRow.id))
        return [r.id for r in session.exec(select(AddressBookRow).order_by(*order)).all()]


LISTINGS = {
    "address book": Listing("/v1/addressbook", "id", _grow_book, _book_order),
    "proposals": Listing(
        "/v1/proposals", "id", _grow_proposals, _by_creation(Proposal), ("pending", "rejected", "approved")
    ),
    "ceremonies": Listing(
        "/v1/ceremonies", "id", _grow_ceremonies, _by_creation(Ceremony), ("proposed", "expired", "rejected")
    ),
    "keysets": Listing("/v1/keysets", "id", _grow_keysets, _by_creation(KeySet)),
    "proofs": Listing(
        "/v1/proofs", "id", _grow_proofs, _by_creation(ProofChallenge), ("open", "expired", "signed")
    ),
    "members": Listing("/v1/members", "id", _grow_members, _member_order),
    "reconciliations": Listing(
        "/v1/books/reconciliations",
        "index",
        _grow_logged("reconciliation.reported"),
        _logged_order("reconciliation.reported"),
    ),
    "reconciliation jobs": Listing("/v1/books/reconciliations/jobs", "job", _grow_jobs, _jobs_newest_first),
    "statements": Listing(
        "/v1/books/statements", "index", _grow_logged("statement.issued"), _logged_order("statement.issued")
    ),
}


def _grown(world: World, listing: Listing, n: int = 60) -> list[Any]:
    setup(world)  # a key set, its ceremony, approved proposals
    listing.grow(world, n)
    expected = listing.order(world)
    assert len(expected) >= n
    return expected


def _get(world: World, path: str, **params: Any) -> tuple[list[dict[str, Any]], str | None]:
    seen: list[str | None] = []
    token = world.client.session(world["olga"])
    body = world.client.request("GET", path, token=token, params=params, next_cursor=seen)
    return body, seen[0] if seen else None


@pytest.mark.parametrize("name", sorted(LISTINGS))
def test_every_list_walks_in_pages_each_item_once_in_order(world: World, name: str) -> None:
    listing = LISTINGS[name]
    expected = _grown(world, listing)
    walked: list[Any] = []
    cursor: str | None = None
    pages_read = 0
    while True:
        body, cursor = _get(world, listing.path, limit=7, **({"cursor": cursor} if cursor else {}))
        assert len(body) <= 7
        walked.extend(item[listing.key] for item in body)
        pages_read += 1
        if cursor is None:
            break
    assert walked == expected
    assert pages_read == -(-len(expected) // 7)
    assert [i[listing.key] for i in world.client.get_all(world["olga"], listing.path)] == expected
    first = world.client.get_all(world["olga"], listing.path, first=10)
    assert [i[listing.key] for i in first] == expected[:10]

    # the status filter runs in SQL and agrees with the status each item reads as now
    everything = world.client.get_all(world["olga"], listing.path)
    for status in listing.statuses:
        filtered = world.client.get_all(world["olga"], listing.path, status=status)
        assert [i[listing.key] for i in filtered] == [
            i[listing.key] for i in everything if i["status"] == status
        ], status
    if listing.statuses:
        assert {i["status"] for i in everything} >= set(listing.statuses[:2])


@pytest.mark.parametrize("name", sorted(LISTINGS))
def test_every_list_page_costs_the_same_statements_at_5_and_50_rows(world: World, name: str) -> None:
    listing = LISTINGS[name]
    _grown(world, listing)
    counter = SqlCounter(
        world.svc,
        world.client,
        lambda method, path: "list" if method == "GET" and path == listing.path else None,
    )
    try:
        world.client.session(world["olga"])
        small, _ = _get(world, listing.path, limit=5)
        at_5 = counter.total()
        counter.reset()
        large, _ = _get(world, listing.path, limit=50)
        at_50 = counter.total()
    finally:
        counter.close()
    assert (len(small), len(large)) == (5, 50)
    assert at_5 == at_50, (name, at_5, at_50)
    if name == "proposals":
        assert all(p["approvals"] for p in large if p["id"].startswith("zz_copy"))
    if name == "keysets":
        assert all(k["addresses"] and k["keys"] for k in large)
    if name == "address book":  # each page reads its entries' removals, and only theirs
        copies = {e["id"]: e["status"] for e in large if e["id"].startswith("zz_copy")}
        assert copies
        want = ("removed", "removal_pending", "active")
        assert all(status == want[int(i[7:]) % 3] for i, status in copies.items()), copies
    print(f"SQL statements per {name} page: {at_50}")


@pytest.mark.parametrize("name", sorted(LISTINGS))
@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 501},
        {"cursor": "not-a-cursor"},
        {"cursor": pages.encode_cursor("withdrawals", [1, "x"])},
        {"cursor": pages.encode_cursor("proposals", ["x", 1])},
    ],
    ids=["limit0", "limit501", "garbage", "other-list", "wrong-shape"],
)
def test_every_list_refuses_a_bad_page_with_a_stable_code(
    world: World, name: str, params: dict[str, Any]
) -> None:
    with pytest.raises(RemoteError) as err:
        _get(world, LISTINGS[name].path, **params)
    assert err.value.remote_code == "invalid_input"
