"""The leak matrix's write dimension: every kind of actor x create, update, patch, delete x
an allowed and a forbidden target, each with its expected status and, on refusal, a read-back
(backend token) proving nothing changed. Expectations follow profiles/access/writes.json's
defaults and the seed's declared facts (seed_data/README.md), never the server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from joserfc.jwk import RSAKey

from tests.integration.access.test_smart_enforcement import Server
from tests.integration.access.test_writes import USER, W
from tests.integration.auth.conftest import BACKEND
from tests.integration.auth.test_backend_services import assertion, request_token
from tests.integration.seeded import seeded_server

OBS_CAT = "http://terminology.hl7.org/CodeSystem/observation-category"


def appointment(patient: str) -> dict[str, Any]:
    return {
        "resourceType": "Appointment",
        "status": "proposed",
        "description": "matrix",
        "participant": [{"actor": {"reference": f"Patient/{patient}"}, "status": "needs-action"}],
    }


def lab(patient: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": OBS_CAT, "code": "laboratory"}]}],
        "code": {"text": "matrix"},
        "subject": {"reference": f"Patient/{patient}"},
    }


def condition(patient: str) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "code": {"text": "matrix"},
        "subject": {"reference": f"Patient/{patient}"},
    }


# (actor, who, allowed create, forbidden create) with the expected status of the forbidden.
CREATES = [
    ("self", "sponsor", appointment("sponsor-james-carter"), lab("sponsor-james-carter"), 422),
    ("child", "sponsor", appointment("child-liam-carter"), condition("child-liam-carter"), 403),
    (
        "adolescent",
        "sponsor",
        appointment("adolescent-sophia-carter"),
        lab("adolescent-sophia-carter"),
        403,
    ),
    (
        "adult-granted",
        "sponsor",
        appointment("dependent-daniel-carter"),
        condition("dependent-daniel-carter"),
        403,
    ),
    ("no-relation", "sponsor", None, appointment("dependent-emma-carter"), 403),
    ("basic", "basic-user", None, appointment("retiree-robert-alvarez"), 403),
    (
        "managed",
        "managed-account",
        appointment("managed-eleanor-brooks"),
        lab("managed-eleanor-brooks"),
        403,
    ),
    (
        "clinician",
        "dr.rachel.kim",
        condition("sponsor-james-carter"),
        condition("veteran-samuel-ortiz"),
        403,
    ),
    ("system", "backend", None, appointment("sponsor-james-carter"), 403),
]
# (actor, who, ref, expected status) for PUT and for PATCH of `language`
# (`telecom` on a Patient); a hidden target answers as a missing one (404).
UPDATES = [
    ("self", "sponsor", "Patient/sponsor-james-carter", 200),
    ("self", "sponsor", "Condition/cond-james-hypertension", 403),
    ("child", "sponsor", "Appointment/appt-liam-well-child", 200),
    ("child", "sponsor", "Observation/obs-liam-peanut-ige", 403),
    ("adolescent", "sponsor", "Appointment/appt-sophia-well-visit", 200),
    ("adolescent", "sponsor", "Communication/msg-sophia-followup-1", 404),
    ("adult-granted", "sponsor", "Appointment/appt-daniel-knee-injury", 200),
    ("adult-granted", "sponsor", "Consent/consent-daniel-proxy-james", 403),
    ("no-relation", "sponsor", "Appointment/appt-robert-psy-probe", 404),
    ("basic", "basic-user", "Patient/retiree-robert-alvarez", 403),
    ("managed", "managed-account", "Appointment/appt-eleanor-followup", 200),
    ("managed", "managed-account", "Condition/cond-eleanor-osteoporosis", 403),
    ("clinician", "dr.rachel.kim", "Condition/cond-james-hypertension", 200),
    ("clinician", "dr.rachel.kim", "CareTeam/careteam-james-carter", 403),
    ("system", "backend", "Slot/slot-rachel-wd01-1400", 403),
]
PROTECTED = [
    ("self", "sponsor", "Patient/sponsor-james-carter", "/birthDate", "1950-01-01"),
    ("child", "sponsor", "Patient/child-liam-carter", "/birthDate", "2000-01-01"),
    ("managed", "managed-account", "Patient/managed-eleanor-brooks", "/identifier", []),
]
# Deletes: only the organisation's systems delete (this backend client is read-only).
DELETES = [
    ("self", "sponsor", "Appointment/appt-james-annual-physical", 403),
    ("child", "sponsor", "Appointment/appt-liam-cancelled", 403),
    ("adolescent", "sponsor", "Immunization/imm-sophia-hpv", 403),
    ("adult-granted", "sponsor", "Consent/consent-daniel-proxy-james", 403),
    ("basic", "basic-user", "Immunization/imm-robert-zoster", 403),
    ("managed", "managed-account", "Appointment/appt-eleanor-followup-next", 403),
    ("clinician", "dr.rachel.kim", "Condition/cond-james-low-back-pain", 403),
    ("clinician", "dr.rachel.kim", "Practitioner/pcm-rachel-kim", 403),
    ("system", "backend", "Slot/slot-rachel-wd03-0900", 403),
]


@pytest.fixture(scope="module")
async def w(mongo_uri: str) -> AsyncIterator[W]:
    async with seeded_server(mongo_uri) as (app, http):
        store = app.state.ctx.store
        await store.update(
            "Appointment", "appt-robert-psy-probe", appointment("retiree-robert-alvarez")
        )
        s = Server(http)
        key = RSAKey.import_key(BACKEND["jwk"])
        r = await request_token(s, assertion(key, BACKEND["client_id"], "RS384"))
        assert r.status_code == 200, r.text
        tokens = {"backend": r.json()["access_token"]}
        for role in ("sponsor", "basic-user", "managed-account", "dr.rachel.kim"):
            tokens[role] = await s.token(role, USER)
        yield W(s, tokens)


async def _version(w: W, ref: str) -> str:
    r = await w.backend(ref)
    return str(r.json()["meta"]["versionId"]) if r.status_code == 200 else str(r.status_code)


def _changed(resource: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    if resource["resourceType"] == "Patient":
        value: Any = [{"system": "phone", "value": "555-0199"}]
        return {**resource, "telecom": value}, [{"op": "add", "path": "/telecom", "value": value}]
    return {**resource, "language": "en-US"}, [{"op": "add", "path": "/language", "value": "en-US"}]


async def test_write_matrix(w: W) -> None:
    failures: list[str] = []
    checks = 0

    def check(label: str, ok: bool, detail: Any = "") -> None:
        nonlocal checks
        checks += 1
        if not ok:
            failures.append(f"{label}: {detail}")

    for actor, who, allowed, forbidden, status in CREATES:
        if allowed is not None:
            r = await w.send(who, "POST", allowed["resourceType"], allowed)
            check(f"create {actor} allowed", r.status_code == 201, r.text[:300])
        rt = forbidden["resourceType"]
        before = (await w.backend(f"{rt}?_count=500")).json()["total"]
        r = await w.send(who, "POST", rt, forbidden)
        check(f"create {actor} forbidden", r.status_code == status, r.text[:300])
        after = (await w.backend(f"{rt}?_count=500")).json()["total"]
        check(f"create {actor} nothing stored", before == after, (before, after))
    for actor, who, ref, status in UPDATES:
        current = (await w.backend(ref)).json()
        body, ops = _changed(current)
        for method, payload, extra in (
            ("PUT", body, {}),
            ("PATCH", ops, {"Content-Type": "application/json-patch+json"}),
        ):
            vid = await _version(w, ref)
            r = await w.send(who, method, ref, payload, **extra)
            check(f"{method} {actor} {ref}", r.status_code == status, r.text[:300])
            if status != 200:
                check(f"{method} {actor} {ref} unchanged", await _version(w, ref) == vid)
        if status == 200:
            # The same write as a conditional update.
            r = await w.send(who, "PUT", f"{ref.split('/')[0]}?_id={ref.split('/')[1]}", body)
            check(f"conditional update {actor} {ref}", r.status_code == 200, r.text[:300])
    for actor, who, ref, path, value in PROTECTED:
        vid = await _version(w, ref)
        ops = [{"op": "replace", "path": path, "value": value}]
        r = await w.send(who, "PATCH", ref, ops, **{"Content-Type": "application/json-patch+json"})
        check(f"protected {actor} {path}", r.status_code == 422, r.text[:300])
        check(f"protected {actor} {path} unchanged", await _version(w, ref) == vid)
    for actor, who, ref, status in DELETES:
        vid = await _version(w, ref)
        r = await w.send(who, "DELETE", ref)
        check(f"delete {actor} {ref}", r.status_code == status, r.text[:300])
        check(f"delete {actor} {ref} still there", await _version(w, ref) == vid)
    print(f"\nwrite matrix: {checks} checks")
    assert not failures, "\n".join(failures)
