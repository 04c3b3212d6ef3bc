"""Property-based API fuzzing with schemathesis 4 over the whole app, with a deployment
already created: no 5xx anywhere, and answers that conform to the published schema.

The routes parse their bodies strictly from raw bytes (``strict(Model)``), so FastAPI
publishes no request bodies. The test recovers each route's body model from its
dependency and adds it to the schema, so schemathesis generates real bodies (positive
and negative) rather than only empty ones; ``test_openapi_documents_request_bodies``
records the gap in the published schema itself.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from pydantic import BaseModel
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from tests.conftest import BACKENDS, FakeClock, claim_token_of, make_database, new_member

from tandem.api import create_app
from tandem.api.deps import api_routes
from tandem.client import Client
from tandem.client.members import draft_genesis, sign_genesis
from tandem.core.roles import Role
from tandem.core.service_key import ServiceKey
from tandem.services import Tandem

MAX_EXAMPLES = 25  # per operation and variant, positive mode
NEGATIVE_EXAMPLES = 15
CONFORMANCE_EXAMPLES = 10


class Fuzzed(NamedTuple):
    backend: str
    app: FastAPI
    svc: Tandem
    token: str


def body_model(route: APIRoute) -> type[BaseModel] | None:
    """The model a route's ``strict(Model)`` dependency parses its body into."""
    for dep in route.dependant.dependencies:
        for cell in getattr(dep.call, "__closure__", None) or ():
            try:
                value = cell.cell_contents
            except ValueError:
                continue
            if isinstance(value, type) and issubclass(value, BaseModel):
                return value
    return None


def with_request_bodies(app: FastAPI) -> dict[str, Any]:
    spec = app.openapi()
    components = spec.setdefault("components", {}).setdefault("schemas", {})
    for route in api_routes(app):
        if "POST" not in route.methods:
            continue
        model = body_model(route)
        if model is None:
            continue
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(schema.pop("$defs", {}))
        spec["paths"][route.path]["post"]["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schema}},
        }
    return spec


@pytest.fixture(scope="module", params=BACKENDS)
def fuzzed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    db = make_database(request.param, Path(tmp_path_factory.mktemp("fuzz")))
    clock = FakeClock()
    svc = Tandem(db, ServiceKey.generate(), clock=clock)
    svc.audit.startup_check()
    app = create_app(service=svc)
    people = [
        new_member("alice", Role.MANAGER),
        new_member("bob", Role.CUSTODIAN),
        new_member("olga", Role.AUDITOR),
    ]
    with TestClient(app, raise_server_exceptions=False) as http:
        c = Client(http=http, clock=clock)
        doc = draft_genesis(
            deployment="dep_" + secrets.token_hex(8),
            entity="Fuzz Fund",
            created_at=clock(),
            service=c.deployment()["service"],
            cards=[m.card() for m in people],
        )
        c.members.submit_genesis(
            doc, dict(sign_genesis(m, doc) for m in people), claim_token=claim_token_of(svc)
        )
        for m in people:
            c.members.enrol_totp(m)
        c.members.propose_add(people[0], new_member("nina", Role.AUDITOR).card())
        token = c.session(people[2])
    yield Fuzzed(request.param, app, svc, token)
    db.drop_schema()
    db.dispose()


def _schema(fuzzed: Fuzzed, *, bodies: bool) -> Any:
    if bodies:
        fuzzed.app.openapi_schema = with_request_bodies(fuzzed.app)
    else:
        fuzzed.app.openapi_schema = None
    return schemathesis.openapi.from_asgi("/openapi.json", fuzzed.app)


def _run(schema: Any, token: str, checks: list[Any], modes: dict[GenerationMode, int]) -> list[str]:
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        has_auth = any(p.name.lower() == "authorization" for p in operation.headers)
        for mode, examples in modes.items():
            # Reads are fuzzed with a valid session (to reach past authentication) and,
            # in positive mode, with a generated Authorization header too.
            variants: list[dict[str, Any]] = [{}]
            if has_auth:
                auth = {"headers": {"authorization": f"Bearer {token}"}}
                variants = [{}, auth] if mode is GenerationMode.POSITIVE else [auth]
            for extra in variants:
                strategy = operation.as_strategy(generation_mode=mode, **extra)

                @given(case=strategy)
                @settings(
                    max_examples=examples,
                    deadline=None,
                    database=None,
                    derandomize=True,
                    # No shrinking: a failure is reported as found, so a bug costs no extra time.
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck),
                )
                def check(case: Any) -> None:
                    response = case.call()
                    case.validate_response(response, checks=checks)

                try:
                    check()
                except Unsatisfiable:
                    # Nothing about this operation can be made invalid (no parameters,
                    # or only a fixed header): there are no negative cases to send.
                    if mode is not GenerationMode.NEGATIVE:
                        raise
                except (Exception, BaseExceptionGroup) as exc:
                    found = getattr(exc, "exceptions", None) or [exc]
                    detail = "; ".join(f"{type(e).__name__}: {str(e)[:300]}" for e in found)
                    failures.append(f"{operation.label} [{mode.value}{' auth' if extra else ''}]: {detail}")
    return failures


def test_no_server_error_anywhere(fuzzed: Fuzzed) -> None:
    schema = _schema(fuzzed, bodies=True)
    failures = _run(
        schema,
        fuzzed.token,
        [not_a_server_error],
        {GenerationMode.POSITIVE: MAX_EXAMPLES, GenerationMode.NEGATIVE: NEGATIVE_EXAMPLES},
    )
    assert failures == [], "\n\n".join(failures)
    # The fuzzing did not break the log either.
    fresh = Tandem(fuzzed.svc.db, fuzzed.svc.key, clock=fuzzed.svc.clock)
    fresh.audit.startup_check()
    assert fresh.runner.sealed_reason is None


def test_responses_conform_to_the_schema(fuzzed: Fuzzed) -> None:
    schema = _schema(fuzzed, bodies=True)
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    failures = _run(schema, fuzzed.token, checks, {GenerationMode.POSITIVE: CONFORMANCE_EXAMPLES})
    assert failures == [], "\n\n".join(failures)


def test_openapi_documents_request_bodies(fuzzed: Fuzzed) -> None:
    """Clients, auditors and fuzzers learn a write route's body from the published
    schema; every route with a strict body model should publish it."""
    fuzzed.app.openapi_schema = None
    spec = fuzzed.app.openapi()
    missing = [
        route.path
        for route in api_routes(fuzzed.app)
        if "POST" in route.methods
        and body_model(route) is not None
        and "requestBody" not in spec["paths"][route.path]["post"]
    ]
    assert missing == []
