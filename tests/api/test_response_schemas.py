"""Every JSON route declares what it answers, and what it answers matches.

The first test walks every API route (included routers too) and asks each JSON route
for a response model, each other route for the media type it serves. The second runs a
short lifecycle over HTTP (genesis, a keygen ceremony, a proof of ownership, address
book and policy changes, a withdrawal created, approved and released, the books and the
audit log read) and validates every answer against the OpenAPI schema of its route and
status: the published document describes the bytes actually served.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args, get_origin

import httpx
import jsonschema_rs
import pytest
from fastapi import FastAPI
from fastapi.datastructures import DefaultPlaceholder
from fastapi.routing import APIRoute
from pydantic import TypeAdapter
from tests.conftest import World
from tests.helpers.withdrawals import approve, btc_intent, setup, utxos

from tandem.api import schemas
from tandem.api.deps import api_routes
from tandem.api.public_models import Public
from tandem.core.canonical import canonical

ROOT = Path(__file__).resolve().parents[2]
PLAIN: TypeAdapter[Any] = TypeAdapter(Any)
# Routes whose 200 answer is not a JSON document FastAPI serialises: the bytes of a
# signed file, or a stream of JSON Lines.
NON_JSON = {
    ("GET", "/v1/audit/export"): "application/x-ndjson",
    ("GET", "/v1/proofs/{challenge_id}/bundle"): "application/json",
    ("GET", "/v1/public/proofs/{challenge_id}/bundle"): "application/json",
}


def _declared(model: Any) -> bool:
    """A public model, a list of them, or the health answer."""
    if get_origin(model) is list:
        (model,) = get_args(model)
    return isinstance(model, type) and (issubclass(model, Public) or model is schemas.Health)


def _method(route: APIRoute) -> str:
    (method,) = route.methods - {"HEAD", "OPTIONS"}
    return method


def test_every_json_route_declares_its_answer(http: Any) -> None:
    app: FastAPI = http.app
    routes = api_routes(app)
    assert len(routes) >= 86
    missing = []
    for route in routes:
        key = (_method(route), route.path)
        if key in NON_JSON:
            content = route.responses.get(200, {}).get("content", {})
            if NON_JSON[key] not in content:
                missing.append(f"{key}: no media type declared")
            continue
        assert isinstance(route.response_class, DefaultPlaceholder), key
        if not _declared(route.response_model):
            missing.append(f"{key}: response_model {route.response_model!r}")
    assert missing == []
    spec = app.openapi()
    for route in routes:
        key = (_method(route), route.path)
        answer = spec["paths"][route.path][key[0].lower()]["responses"]
        ok = next(a for s, a in answer.items() if s.startswith("2"))
        media = NON_JSON.get(key, "application/json")
        assert media in ok["content"], key
        if key not in NON_JSON:
            assert ok["content"][media]["schema"] not in ({}, {"type": "object"}), key


# --- answers against the published schema ---------------------------------------------------


def _route_of(routes: list[APIRoute], method: str, path: str) -> APIRoute | None:
    for route in routes:
        if method in route.methods and route.path_regex.match(path):
            return route
    return None


def _validator(spec: dict[str, Any], path: str, method: str, status: int) -> Any:
    answers = spec["paths"][path][method.lower()]["responses"]
    answer = answers.get(str(status)) or spec.get("components", {}).get("responses", {}).get(str(status))
    assert answer is not None, (method, path, status)
    schema = answer["content"]["application/json"]["schema"]
    return jsonschema_rs.Draft202012Validator({**schema, "components": spec["components"]})


def definition(name: str) -> str:
    return (ROOT / "ceremonies" / f"{name}.toml").read_text(encoding="utf-8")


def lifecycle(world: World) -> None:
    """Genesis is done by the fixture; the rest of a short deployment's life."""
    c = world.client
    c.ceremonies.run(
        proposer=world["alice"],
        approvers=[world["bob"]],
        definition_text=definition("bitcoin-testnet-cold"),
        code=world.code,
    )
    c.proofs.run(
        issuer=world["olga"],
        manager=world["alice"],
        custodian=world["bob"],
        scope={"kind": "all"},
        code=lambda: world.code("bob"),
    )
    s = setup(world)
    created = c.withdrawals.create(world["alice"], btc_intent(s, spend=utxos(s.btc_from)))
    approve(world, created["id"])
    c.withdrawals.release(world["cora"], created["id"])
    olga = c.session(world["olga"])
    reads = [
        "/v1/health",
        "/v1/deployment",
        "/v1/members",
        "/v1/proposals",
        "/v1/withdrawals",
        f"/v1/withdrawals/{created['id']}",
        f"/v1/withdrawals/{created['id']}/bundle",
        "/v1/policy",
        f"/v1/policy/explain?withdrawal={created['id']}",
        "/v1/addressbook",
        "/v1/ceremonies",
        "/v1/keysets",
        f"/v1/keysets/{s.keyset.id}",
        "/v1/proofs",
        "/v1/audit/checkpoint",
        "/v1/audit/inclusion/2",
        "/v1/audit/consistency?old=2&new=5",
        "/v1/public/checkpoint",
        "/v1/public/inclusion/2",
        "/v1/public/consistency?old=2&new=5",
        "/v1/books/clients",
        "/v1/books/proposals",
        "/v1/books/positions",
        "/v1/books/movements",
        "/v1/books/reconciliations",
        "/v1/books/reconciliations/jobs",
        "/v1/books/prices",
        "/v1/books/statements",
    ]
    for path in reads:
        c.http.get(path, headers={"Authorization": f"Bearer {olga}"})
    first = c.http.get("/v1/proposals", headers={"Authorization": f"Bearer {olga}"}).json()
    for item in first[:3]:
        c.http.get(f"/v1/proposals/{item['id']}", headers={"Authorization": f"Bearer {olga}"})
    for item in c.http.get("/v1/ceremonies", headers={"Authorization": f"Bearer {olga}"}).json():
        c.http.get(f"/v1/ceremonies/{item['id']}", headers={"Authorization": f"Bearer {olga}"})
        c.http.get(f"/v1/ceremonies/{item['id']}/transcript", headers={"Authorization": f"Bearer {olga}"})
        c.http.get(f"/v1/public/ceremonies/{item['id']}/transcript")
    for item in c.http.get("/v1/proofs", headers={"Authorization": f"Bearer {olga}"}).json():
        c.http.get(f"/v1/proofs/{item['id']}", headers={"Authorization": f"Bearer {olga}"})
    # A refusal is answered with the shared error body.
    c.http.post("/v1/sessions", content=canonical({"envelope": {}}))
    c.http.get("/v1/withdrawals/wd_missing", headers={"Authorization": f"Bearer {olga}"})


@pytest.fixture
def answers(world: World) -> list[httpx.Response]:
    seen: list[httpx.Response] = []

    def keep(response: httpx.Response) -> None:
        response.read()
        seen.append(response)

    world.client.http.event_hooks["response"].append(keep)
    lifecycle(world)
    world.client.http.event_hooks["response"].remove(keep)
    return seen


def test_lifecycle_answers_match_the_published_schemas(world: World, answers: list[httpx.Response]) -> None:
    app: FastAPI = world.client.http.app
    spec = app.openapi()
    routes = api_routes(app)
    checked: set[tuple[str, str]] = set()
    problems = []
    for response in answers:
        method, path = response.request.method, response.request.url.path
        route = _route_of(routes, method, path)
        assert route is not None, (method, path)
        if (method, route.path) in NON_JSON and response.status_code == 200:
            continue
        assert response.headers["content-type"].startswith("application/json"), (method, path)
        validator = _validator(spec, route.path, method, response.status_code)
        body = response.json()
        errors = [f"{e.instance_path}: {e.message}" for e in validator.iter_errors(body)]
        if errors:
            problems.append(f"{method} {route.path} {response.status_code}: {errors[:3]}")
        if 200 <= response.status_code < 300:
            checked.add((method, route.path))
            # The model checked the answer and served it as the service wrote it: the
            # bytes are the plain encoding of the document, nothing added or reordered.
            if response.content != PLAIN.dump_json(body):
                problems.append(f"{method} {route.path}: bytes differ from the document's own")
    assert problems == []
    assert len(checked) >= 40, sorted(checked)
