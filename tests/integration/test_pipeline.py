"""The request pipeline called directly, with no web framework, on a real database.

fhir_server/pipeline.py: an `HttpRequest` in, an `HttpResponse` out; bearer, policy,
routing, rendering, audit and the translation of every failure into an OperationOutcome.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from pymongo.errors import ExecutionTimeout, OperationFailure

from fhir_server.access.audit import AuditSink
from fhir_server.app import build_context
from fhir_server.context import ServerContext
from fhir_server.db.client import ensure_indexes, open_client
from fhir_server.db.embedded import free_port
from fhir_server.errors import Unauthorized
from fhir_server.pipeline import Pipeline
from fhir_server.rest.messages import HttpRequest, HttpResponse
from fhir_server.search.indexes import index_models
from smart_auth import AuthContext
from smart_auth.scopes import parse_scopes
from tests.conftest import drop_test_database, make_settings, patient

FHIR = {"content-type": "application/fhir+json"}


def token(fhir_user: str | None, scope: str, **extra: Any) -> AuthContext:
    return AuthContext(
        subject=fhir_user or "svc",
        client_id="pipeline-test",
        scopes=parse_scopes(scope),
        scope=scope,
        token_id="tok-1",
        grant_id="grant-1",
        expires_at=datetime.now(UTC) + timedelta(hours=1),
        fhir_user=fhir_user,
        **extra,
    )


# Bearer strings the test verifier knows; anything else answers 401 as smart_auth does.
TOKENS = {
    "system": token(None, "system/*.rs system/*.cud"),
    "pat-a": token("Patient/pipe-a", "openid fhirUser user/*.rs", acr="dslogon-premium"),
}


async def verify(bearer: str | None) -> AuthContext:
    if bearer not in TOKENS:
        raise Unauthorized("no valid access token", headers={"WWW-Authenticate": "Bearer"})
    return TOKENS[bearer]


def req(method: str, *path: str, query: str = "", body: Any = b"", **headers: str) -> HttpRequest:
    if isinstance(body, dict):
        body = orjson.dumps(body)
    hdrs = {k.replace("_", "-"): v for k, v in headers.items()}
    if method in ("POST", "PUT") and "content-type" not in hdrs:
        hdrs.update(FHIR)
    return HttpRequest(method, tuple(path), query.encode(), hdrs, body)


def outcome(answer: HttpResponse) -> dict[str, Any]:
    assert answer.media_type == "application/fhir+json; charset=utf-8"
    doc = json.loads(answer.body)
    assert doc["resourceType"] == "OperationOutcome", doc
    return dict(doc["issue"][0])


@pytest.fixture(scope="module")
async def ctxs(mongo_uri: str) -> AsyncIterator[dict[str, ServerContext]]:
    """Two contexts on one database: tokens off, and tokens on (the seam: `verify`)."""
    client = open_client(mongo_uri, timeout_ms=10_000)
    open_settings = make_settings(mongo_uri, max_resource_bytes=12 * 1024 * 1024)
    db = client[open_settings.database]
    plain = build_context(open_settings, db)
    await ensure_indexes(db, index_models())
    guarded = build_context(replace(open_settings, auth_required=True), db)
    yield {"open": plain, "auth": guarded}
    await drop_test_database(client, open_settings.database)
    await client.close()


async def test_reads_writes_and_errors_without_a_framework(ctxs: dict[str, ServerContext]):
    p = Pipeline(ctxs["open"], verify=verify)
    meta = await p.handle(req("GET", "metadata"))
    assert meta.status == 200 and json.loads(meta.body)["resourceType"] == "CapabilityStatement"

    made = await p.handle(req("PUT", "Patient", "pipe-1", body=patient(id="pipe-1")))
    assert made.status == 201, made.body
    assert made.headers["Location"].endswith("/Patient/pipe-1/_history/1")
    read = await p.handle(req("GET", "Patient", "pipe-1", query="_pretty=true"))
    assert read.status == 200 and read.headers["ETag"] == 'W/"1"'
    assert read.body.startswith(b'{\n  "resourceType": "Patient"')  # _pretty
    head = await p.handle(req("HEAD", "Patient", "pipe-1"))
    assert (head.status, head.body) == (200, b"")
    minimal = await p.handle(
        req("POST", "Patient", body=patient(), prefer="return=minimal", **FHIR)
    )
    assert (minimal.status, minimal.body) == (201, b"")

    # A FhirError carries its status and code; _pretty applies to errors too.
    unknown = await p.handle(req("GET", "Nonsense", "1", query="_pretty=true"))
    assert unknown.status == 404 and outcome(unknown)["code"] == "not-supported"
    assert unknown.body.startswith(b'{\n  "resourceType"')
    bad = await p.handle(req("POST", "Patient", body=b"{not json"))
    assert bad.status == 400 and outcome(bad)["code"] == "structure"
    xml = await p.handle(req("GET", "Patient", "pipe-1", query="_format=xml"))
    assert xml.status == 406
    long = await p.handle(req("GET", "Patient", query="name=" + "x" * 70_000))
    assert long.status == 414 and outcome(long)["code"] == "too-long"
    gone = await p.handle(req("DELETE", "Patient", "pipe-1"))
    assert gone.status == 204
    assert (await p.handle(req("GET", "Patient", "pipe-1"))).status == 410


async def test_bodies_stream_in_within_their_limit(ctxs: dict[str, ServerContext]):
    small = build_context(
        replace(ctxs["open"].settings, max_resource_bytes=2_000), ctxs["open"].store.db
    )
    p = Pipeline(small, verify=verify)
    raw = orjson.dumps(patient(id="pipe-stream"))

    async def chunks(data: bytes) -> AsyncIterator[bytes]:
        for i in range(0, len(data), 7):
            yield data[i : i + 7]

    ok = await p.handle(req("PUT", "Patient", "pipe-stream", body=chunks(raw)))
    assert ok.status == 201, ok.body
    big = orjson.dumps(patient(text={"status": "generated", "div": "x" * 5_000}))
    streamed = await p.handle(req("POST", "Patient", body=chunks(big)))
    assert streamed.status == 413 and outcome(streamed)["code"] == "too-costly"

    async def never() -> AsyncIterator[bytes]:
        raise AssertionError("a body known to be too large is not read")
        yield b""  # pragma: no cover

    declared = await p.handle(req("POST", "Patient", body=never(), content_length="5000"))
    assert declared.status == 413


async def test_a_resource_too_large_for_a_document_is_413(ctxs: dict[str, ServerContext]):
    """Under the 12 MiB resource limit, over MongoDB's 16 MiB once indexed (a token is
    indexed whole, several ways): the driver's DocumentTooLarge becomes 413, nothing stored."""
    p = Pipeline(ctxs["open"], verify=verify)
    body = patient(id="pipe-huge", identifier=[{"system": "urn:x", "value": "v" * 6_000_000}])
    answer = await p.handle(req("PUT", "Patient", "pipe-huge", body=body))
    assert answer.status == 413, answer.body[:300]
    assert "16 MiB" in outcome(answer)["diagnostics"]
    assert (await p.handle(req("GET", "Patient", "pipe-huge"))).status == 404


async def test_tokens_policy_and_audit(ctxs: dict[str, ServerContext]):
    ctx = ctxs["auth"]
    sink = AuditSink(ctx.store)
    sink.start()
    p = Pipeline(ctx, verify=verify, audit=sink)
    try:
        write = await p.handle(
            req(
                "PUT", "Patient", "pipe-a", body=patient(id="pipe-a"), authorization="Bearer system"
            )
        )
        assert write.status == 201, write.body
        other = await p.handle(
            req(
                "PUT", "Patient", "pipe-b", body=patient(id="pipe-b"), authorization="Bearer system"
            )
        )
        assert other.status == 201
        # No token: 401 with the challenge; metadata needs none.
        anon = await p.handle(req("GET", "Patient", "pipe-a"))
        assert anon.status == 401 and anon.headers["WWW-Authenticate"] == "Bearer"
        assert (await p.handle(req("GET", "metadata"))).status == 200
        # The patient's own record, and another patient's answering as a missing one.
        own = await p.handle(req("GET", "Patient", "pipe-a", authorization="Bearer pat-a"))
        assert own.status == 200
        hidden = await p.handle(req("GET", "Patient", "pipe-b", authorization="Bearer pat-a"))
        missing = await p.handle(req("GET", "Patient", "pipe-z", authorization="Bearer pat-a"))
        assert hidden.status == missing.status == 404
        assert outcome(hidden)["diagnostics"] == outcome(missing)["diagnostics"].replace(
            "pipe-z", "pipe-b"
        )
        # Break-the-glass is a clinician's: a patient stating a reason is refused.
        glass = ctx.policy_tables.clinicians.break_glass_header
        refused = await p.handle(
            req("GET", "Patient", "pipe-a", authorization="Bearer pat-a", **{glass: "x" * 40})
        )
        assert refused.status == 403
        await sink.flush()
        # Read back as the FHIR search any auditor makes (not the storage shape).
        log = await p.handle(
            req("GET", "AuditEvent", query="agent=Patient/pipe-a", authorization="Bearer system")
        )
        events = [e["resource"] for e in json.loads(log.body).get("entry", [])]
        outcomes = sorted(e["outcomeDesc"] for e in events)
        assert outcomes == ["HTTP 200", "HTTP 403", "HTTP 404", "HTTP 404"], outcomes
    finally:
        await sink.close(timeout_s=10)


async def test_failures_become_operation_outcomes(ctxs: dict[str, ServerContext]):
    """What the database or a bug raises is translated here: 503 with Retry-After for
    the database, 500 with nothing of the internals for anything else."""

    def failing(exc: BaseException) -> Any:
        async def verify_raising(_: str | None) -> AuthContext:
            raise exc

        return verify_raising

    ctx = ctxs["auth"]
    cases = [
        (ExecutionTimeout("operation exceeded time limit"), 503, "timeout"),
        (OperationFailure("some server error"), 503, "transient"),
        (RuntimeError("secret internals"), 500, "exception"),
    ]
    for exc, status, code in cases:
        answer = await Pipeline(ctx, verify=failing(exc)).handle(
            req("GET", "Patient", "x", authorization="Bearer system")
        )
        issue = outcome(answer)
        assert (answer.status, issue["code"]) == (status, code), (exc, answer.body)
        assert "secret" not in answer.body.decode()
        assert ("Retry-After" in answer.headers) == (status == 503)


async def test_an_unreachable_database_is_503_transient(ctxs: dict[str, ServerContext]):
    settings = make_settings(f"mongodb://127.0.0.1:{free_port()}", db_timeout_ms=300)
    client = open_client(settings.mongodb_uri, timeout_ms=300)
    try:
        p = Pipeline(build_context(settings, client[settings.database]), verify=verify)
        answer = await p.handle(req("GET", "Patient", "x"))
        assert answer.status == 503 and outcome(answer)["code"] == "transient"
        assert answer.headers["Retry-After"] == "5"
    finally:
        await client.close()


async def test_the_policy_parses_nothing_per_request(
    ctxs: dict[str, ServerContext], monkeypatch: pytest.MonkeyPatch
):
    """The access tables are parsed into criteria at start-up (access/policy_tables.py):
    a Basic login's policy, which hides the sensitive labels, parses no search."""
    from fhir_server.access.policy import build_policy
    from fhir_server.search import parse

    ctx = ctxs["auth"]
    basic = token("Patient/pipe-a", "openid fhirUser user/*.rs", acr="dslogon-basic")
    parses = 0
    real_init = parse._Parser.__init__

    def counting(self: Any, *args: Any) -> None:
        nonlocal parses
        parses += 1
        real_init(self, *args)

    monkeypatch.setattr(parse._Parser, "__init__", counting)
    policy = await build_policy(ctx.store, ctx.policy_tables, basic)
    assert parses == 0
    assert policy.rules is not None
    assert set(ctx.policy_tables.label_keys) <= set(policy.rules[0].hidden_keys)
