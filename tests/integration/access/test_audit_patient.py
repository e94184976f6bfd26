"""'Who looked at my record', end to end with real SMART tokens, and no leak through the log.

A clinician's read lands in the patient's compartment (the R4 AuditEvent `patient` search
parameter, the Patient CompartmentDefinition), so the patient's own token finds it. An event
about a labelled record carries the record's sensitive labels, so those who may not see the
record (proxies, Basic logins) cannot see the event either, even with the blanket R lifted.
Every login, failed or not, is an AuditEvent too. https://profiles.ihe.net/ITI/BALP/
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc.jwk import RSAKey

from tests.conftest import make_settings
from tests.integration.access.test_smart_enforcement import Server, ids
from tests.integration.auth.conftest import (
    BACKEND,
    BASE,
    PUBLIC,
    authorize_params,
    login_for,
    login_page,
    pkce,
    submit_login,
)
from tests.integration.auth.test_backend_services import assertion, request_token
from tests.integration.seeded import restore_seed

ROOT = Path(__file__).resolve().parents[3]
TABLE = json.loads((ROOT / "profiles/access/family.json").read_text())
SENSITIVE = {(g["system"], c) for g in TABLE["sensitive_labels"] for c in g["codes"]}
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
USER = "openid fhirUser user/*.cruds"
JAMES = "Patient/sponsor-james-carter"
SOPHIA = "Patient/adolescent-sophia-carter"
LIAM = "Patient/child-liam-carter"
DANIEL = "Patient/dependent-daniel-carter"
ROBERT = "Patient/retiree-robert-alvarez"
KIM = "Practitioner/pcm-rachel-kim"
STI = "Observation/obs-sophia-chlamydia-naat"
ALCOHOL = "Condition/cond-daniel-alcohol-use"
LIAM_PLAIN = "Observation/obs-liam-peanut-ige"
LIAM_LABELLED = "Observation/obs-liam-psy-audit-probe"
ROBERT_LABELLED = "Appointment/appt-robert-psy-audit-probe"
PSY = [{"system": ACT, "code": "PSY"}]


@dataclass
class Env:
    app: Any
    s: Server
    tokens: dict[str, str]

    async def flush(self) -> None:
        await self.app.state.audit.flush()

    async def search(self, who: str, **params: str) -> dict:
        await self.flush()
        r = await self.s.get(self.tokens[who], "AuditEvent", _count="1000", **params)
        assert r.status_code == 200, r.text
        return dict(r.json())


async def _probes(store: Any) -> None:
    """Labelled records the seed lacks: one of the under-12 child, one of the Basic user."""
    await store.update(
        "Observation",
        LIAM_LABELLED.split("/")[1],
        {
            "resourceType": "Observation",
            "meta": {"security": PSY},
            "status": "final",
            "code": {"text": "audit probe"},
            "subject": {"reference": LIAM},
        },
    )
    await store.update(
        "Appointment",
        ROBERT_LABELLED.split("/")[1],
        {
            "resourceType": "Appointment",
            "meta": {"security": PSY},
            "status": "booked",
            "participant": [{"actor": {"reference": ROBERT}, "status": "accepted"}],
        },
    )


@pytest.fixture(scope="module")
async def env(mongo_uri: str) -> AsyncIterator[Env]:
    from fhir_server.app import create_app

    settings = make_settings(mongo_uri, auth_required=True)
    await restore_seed(mongo_uri, settings.database)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        await app.state.ready
        await _probes(app.state.ctx.store)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
            s = Server(http)
            key = RSAKey.import_key(BACKEND["jwk"])
            r = await request_token(s, assertion(key, BACKEND["client_id"], "RS384"))
            assert r.status_code == 200, r.text
            tokens = {"backend": r.json()["access_token"]}
            for role in (
                "sponsor",
                "spouse",
                "adult-dependent-granted",
                "basic-user",
                "practitioner",
            ):
                tokens[role] = await s.token(role, USER)
            tokens["sponsor-patient"] = await s.token(
                "sponsor", "launch/patient openid fhirUser patient/*.rs", patient=JAMES
            )
            yield Env(app, s, tokens)
        await app.state.audit.flush()
        await app.state.ctx.store.client.drop_database(settings.database)


def entities(event: dict) -> set[str]:
    return {e["what"]["reference"] for e in event.get("entity", []) if "what" in e}


def naming(bundle: dict, ref: str) -> list[dict]:
    return [
        e["resource"]
        for e in bundle.get("entry", [])
        if e["resource"]["resourceType"] == "AuditEvent" and ref in entities(e["resource"])
    ]


async def _read(env: Env, who: str, ref: str) -> None:
    r = await env.s.get(env.tokens[who], ref)
    assert r.status_code == 200, r.text


async def test_the_patient_sees_who_looked_at_their_record(env: Env) -> None:
    found = await env.s.get(env.tokens["practitioner"], "Observation", patient=JAMES, _count="1")
    assert found.status_code == 200, found.text
    (obs,) = ids(found.json())
    await _read(env, "practitioner", obs)

    # The stored event is in James's compartment (computed by the store at write time).
    await env.flush()
    stored = [
        d
        async for d in env.app.state.ctx.store.db.audit.find(
            {"rt": "AuditEvent", "res.entity.what.reference": obs}
        )
    ]
    assert stored and all(JAMES in d["comp"] for d in stored)

    for token in ("sponsor", "sponsor-patient"):
        bundle = await env.search(token, patient=JAMES)
        reads = [
            e
            for e in naming(bundle, obs)
            if e["subtype"][0]["code"] == "read" and e["agent"][0]["who"] == {"reference": KIM}
        ]
        assert len(reads) == 1, token
        event = reads[0]
        assert event["outcome"] == "0" and event["action"] == "R"
        assert event["agent"][1]["who"] == {"display": PUBLIC["client_id"]}
        assert event["recorded"]
        assert JAMES in entities(event)
        # Readable by id, and through the compartment as well.
        r = await env.s.get(env.tokens[token], f"AuditEvent/{event['id']}")
        assert r.status_code == 200 and r.json()["id"] == event["id"]
    r = await env.s.get(env.tokens["sponsor-patient"], f"{JAMES}/AuditEvent", _count="1000")
    assert r.status_code == 200 and naming(r.json(), obs)
    # The clinician's search names James (from the query) but lists no result.
    searches = [
        e
        for e in bundle["entry"]
        if e["resource"]["subtype"][0]["code"] == "search-type"
        and e["resource"]["agent"][0]["who"] == {"reference": KIM}
    ]
    assert searches
    assert entities(searches[0]["resource"]) == {JAMES}
    query = next(x for x in searches[0]["resource"]["entity"] if x["role"]["code"] == "24")
    assert "patient=" in base64.b64decode(query["query"]).decode()


async def test_events_about_a_labelled_record_carry_its_labels(env: Env) -> None:
    await _read(env, "practitioner", ALCOHOL)
    await env.flush()
    doc = await env.app.state.ctx.store.resources.find_one({"_id": ALCOHOL})
    record_labels = {(c["system"], c["code"]) for c in doc["res"]["meta"]["security"]} & SENSITIVE
    assert record_labels
    # Daniel (himself, Premium) sees who read his labelled record, with its labels.
    bundle = await env.search("adult-dependent-granted", entity=ALCOHOL)
    events = naming(bundle, ALCOHOL)
    assert any(e["agent"][0]["who"] == {"reference": KIM} for e in events)
    for e in events:
        assert record_labels <= {(c["system"], c["code"]) for c in e["meta"]["security"]}


async def _hidden_from(env: Env, who: str, ref: str, patient: str) -> None:
    """`who` finds no AuditEvent naming `ref`: search by entity, by patient, with
    _include and _revinclude, and by id."""
    await env.flush()
    r = await env.s.get(env.tokens[who], "AuditEvent", entity=ref)
    if r.status_code == 403:
        # A login level whose scopes never include AuditEvent (Basic): the log is closed.
        assert "AuditEvent" in r.json()["issue"][0]["diagnostics"]
        return
    assert (await env.search(who, entity=ref))["total"] == 0
    assert naming(await env.search(who, patient=patient), ref) == []
    bundle = await env.search(who, patient=patient, _include="AuditEvent:entity")
    assert ref not in ids(bundle) and naming(bundle, ref) == []
    rt, rid = ref.split("/")
    r = await env.s.get(env.tokens[who], rt, _id=rid, _revinclude="AuditEvent:entity")
    assert not [e for e in r.json().get("entry", []) if e["resource"]["resourceType"] != rt]
    stored = env.app.state.ctx.store.db.audit.find(
        {"rt": "AuditEvent", "res.entity.what.reference": ref}, {"id": 1}
    )
    event_ids = [d["id"] async for d in stored]
    assert event_ids  # there is something to hide
    for eid in event_ids:
        r = await env.s.get(env.tokens[who], f"AuditEvent/{eid}")
        assert r.status_code == 404, (who, ref)


async def test_a_parent_never_learns_of_the_adolescents_labelled_record(env: Env) -> None:
    await _read(env, "practitioner", STI)
    for parent in ("sponsor", "spouse"):
        await _hidden_from(env, parent, STI, SOPHIA)
    # The granted proxy of an adult dependent, and a Basic login on their own record.
    await _hidden_from(env, "sponsor", ALCOHOL, DANIEL)
    await _read(env, "backend", ROBERT_LABELLED)
    await _hidden_from(env, "basic-user", ROBERT_LABELLED, ROBERT)


async def test_copied_labels_alone_hide_the_events(env: Env) -> None:
    """With the blanket R lifted (a policy owner letting proxies see the log), the parent of
    the under-12 child sees the events of the child's ordinary records, never of a
    labelled one; the adolescent's stay hidden (her band has no AuditEvent type)."""
    sink = env.app.state.audit
    sink.label_all = False
    try:
        await _read(env, "practitioner", LIAM_PLAIN)
        await _read(env, "practitioner", LIAM_LABELLED)
        await _read(env, "practitioner", STI)
        await env.flush()
    finally:
        sink.label_all = True
    seen = await env.search("sponsor", patient=LIAM)
    assert naming(seen, LIAM_PLAIN)  # the parent may see these events now
    await _hidden_from(env, "sponsor", LIAM_LABELLED, LIAM)
    await _hidden_from(env, "sponsor", STI, SOPHIA)


async def test_a_denied_request_copies_nothing_of_the_hidden_record(env: Env) -> None:
    """James asks for the adolescent's labelled record: 404, and his own log (which he
    sees) names only what he typed, with no label and no patient taken from the record."""
    r = await env.s.get(env.tokens["sponsor"], STI)
    assert r.status_code == 404
    r = await env.s.http.delete(
        f"/fhir/{STI}", headers={"Authorization": f"Bearer {env.tokens['sponsor']}"}
    )
    assert r.status_code in (204, 403, 404)
    bundle = await env.search("sponsor", agent=JAMES)
    mine = naming(bundle, STI)
    assert {e["subtype"][0]["code"] for e in mine} == {"read", "delete"}
    for e in mine:
        assert entities(e) == {STI}
        assert {c["code"] for c in e["meta"]["security"]} == {"R"}


async def _login(env: Env, username: str, password: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=env.s.http._transport, base_url=BASE) as browser:
        _, challenge = pkce()
        page = await login_page(browser, authorize_params(PUBLIC, USER, challenge))
        return await submit_login(browser, page.text, username, password)


async def test_every_login_is_an_audit_event(env: Env) -> None:
    james = login_for("sponsor")
    assert (await _login(env, james["username"], "wrong password")).status_code == 401
    assert (await _login(env, "nobody.here", "whatever")).status_code == 401
    assert (await _login(env, james["username"], james["password"])).status_code == 200
    bundle = await env.search("sponsor", patient=JAMES, type=f"{DCM}|110114")
    logins = [e["resource"] for e in bundle["entry"]]
    assert all(e["subtype"][0]["code"] == "110122" for e in logins)
    outcomes = [e["outcome"] for e in logins if e["agent"][0]["who"] == {"reference": JAMES}]
    assert "0" in outcomes and "4" in outcomes
    ok = next(e for e in logins if e["outcome"] == "0")
    assert ok["agent"][1]["who"] == {"display": PUBLIC["client_id"]}
    detail = {d["type"]: d["valueString"] for x in ok["entity"] for d in x.get("detail", [])}
    assert detail["login-level"] == james["login"]
    # The unknown username is logged as a failure naming nobody, and is written nowhere.
    await env.flush()
    col = env.app.state.ctx.store.db.audit
    unknown = [
        d["res"]
        async for d in col.find({"rt": "AuditEvent", "res.agent.who.display": "unknown user"})
    ]
    assert unknown and all(e["outcome"] == "4" and not d_comp(e) for e in unknown)
    raw = [json.dumps(d["res"]) async for d in col.find({"rt": "AuditEvent"}, {"res": 1})]
    assert not any("nobody.here" in r for r in raw)


def d_comp(event: dict) -> set[str]:
    return {r for r in entities(event) if r.startswith("Patient/")}
