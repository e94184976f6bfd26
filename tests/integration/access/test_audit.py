"""Audit: every interaction, allowed or denied, becomes a BALP-style AuditEvent, written in
batches; the events themselves are labelled R (proxies never see the access log)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from fhir_server.access.audit import AuditRecord, audit_event, interaction
from tests.conftest import make_settings
from tests.integration.access.test_smart_enforcement import Server
from tests.integration.auth.conftest import BASE
from tests.integration.seeded import restore_seed

USER = "openid fhirUser user/*.cruds"


@pytest.fixture(scope="module")
async def app_server(mongo_uri: str) -> AsyncIterator[tuple[Any, Server]]:
    from fhir_server.app import create_app

    settings = make_settings(mongo_uri, auth_required=True)
    await restore_seed(mongo_uri, settings.database)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        await app.state.ready
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
            yield app, Server(http)
        await app.state.audit.flush()
        await app.state.ctx.store.client.drop_database(settings.database)


async def _events(app: Any, **match: Any) -> list[dict]:
    await app.state.audit.flush()
    col = app.state.ctx.store.db.audit
    return [d["res"] async for d in col.find({"rt": "AuditEvent", **match}, {"res": 1})]


async def test_allowed_and_denied_interactions_are_audited(app_server) -> None:
    app, s = app_server
    james = await s.token("sponsor", USER)
    assert (await s.get(james, "Observation/obs-liam-peanut-ige")).status_code == 200
    assert (await s.get(james, "Observation/obs-sophia-chlamydia-naat")).status_code == 404
    assert (await s.http.get("/fhir/Patient")).status_code == 401
    assert (
        await s.get(james, "Immunization", patient="Patient/child-liam-carter")
    ).status_code == 200
    events = await _events(app)
    by_target = {
        e["entity"][-1]["what"]["reference"]: e
        for e in events
        if e.get("entity") and "what" in e["entity"][-1]
    }
    ok = by_target["Observation/obs-liam-peanut-ige"]
    assert ok["outcome"] == "0" and ok["action"] == "R"
    assert ok["subtype"][0]["code"] == "read"
    assert ok["agent"][0]["who"] == {"reference": "Patient/sponsor-james-carter"}
    assert ok["agent"][0]["requestor"] is True
    denied = by_target["Observation/obs-sophia-chlamydia-naat"]
    assert denied["outcome"] == "4" and denied["outcomeDesc"] == "HTTP 404"
    anonymous = [e for e in events if e["outcomeDesc"] == "HTTP 401"]
    assert anonymous and anonymous[0]["agent"][0]["who"]["identifier"]["value"] == "anonymous"
    search = [e for e in events if e["subtype"][0]["code"] == "search-type" and e["outcome"] == "0"]
    assert search and search[-1]["action"] == "E"
    assert any(x["role"]["code"] == "24" for x in search[-1].get("entity", []))  # the query
    assert all(e["meta"]["security"][0]["code"] == "R" for e in events)


async def test_the_access_log_is_hidden_from_proxies(app_server) -> None:
    app, s = app_server
    james = await s.token("sponsor", USER)
    daniel = await s.token("adult-dependent-granted", USER)
    assert (await s.get(daniel, "Condition/cond-daniel-alcohol-use")).status_code == 200
    await app.state.audit.flush()
    own = (await s.get(daniel, "AuditEvent", _count="500")).json()
    assert own["total"] > 0  # the patient sees the log of their own record
    via_proxy = (await s.get(james, "AuditEvent", patient="Patient/dependent-daniel-carter")).json()
    assert via_proxy["total"] == 0


def test_interaction_codes() -> None:
    cases = {
        ("GET", ()): "search-system",
        ("GET", ("Patient",)): "search-type",
        ("GET", ("Patient", "1")): "read",
        ("GET", ("Patient", "1", "_history")): "history-instance",
        ("GET", ("Patient", "1", "_history", "2")): "vread",
        ("GET", ("Patient", "_history")): "history-type",
        ("GET", ("_history",)): "history-system",
        ("GET", ("Patient", "1", "Observation")): "search-compartment",
        ("POST", ()): "transaction",
        ("POST", ("Patient",)): "create",
        ("POST", ("Patient", "_search")): "search-type",
        ("PUT", ("Patient", "1")): "update",
        ("PATCH", ("Patient", "1")): "patch",
        ("DELETE", ("Patient", "1")): "delete",
    }
    for (method, path), code in cases.items():
        assert interaction(method, list(path)) == code, (method, path)
    event = audit_event(AuditRecord("GET", ["Patient", "1"], status=500))
    assert event["outcome"] == "8"
