"""Results release end to end with real SMART tokens (issue 14 item 6): a final result shows
to the patient on the next request, a held one does not until its expiry (clock.fixed), the
hold rules refuse what the table forbids, the hold's audit trail is readable by a privacy
officer (a system client), and a patient's own delay holds a category of their results.

Expectations come from profiles/access/release.json and the seed's declared facts
(seed_data/results_release.py), never from the server."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc.jwk import RSAKey

from fhir_server import clock
from seed_data.directory import PEOPLE
from tests.integration.access.test_smart_enforcement import Server
from tests.integration.auth.conftest import BACKEND
from tests.integration.auth.test_backend_services import assertion, request_token
from tests.integration.seeded import seeded_server

ROOT = Path(__file__).resolve().parents[3]
TABLE = json.loads((ROOT / "profiles/access/release.json").read_text())
HOLD = TABLE["hold"]
USER = "openid fhirUser user/*.cruds"
JAMES = f"Patient/{PEOPLE['james'].id}"
HELD = "DiagnosticReport/dr-james-held-biopsy"  # seed_data/results_release.py
LAB = {"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}
PATHOLOGY = {"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "SP"}


def instant(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def hold(reason: str, expires: str | None) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [
        {"url": "reason", "valueCoding": {"system": HOLD["reason_system"], "code": reason}}
    ]
    if expires is not None:
        parts.append({"url": "expires", "valueDateTime": expires})
    return {"url": HOLD["extension"], "extension": parts}


def observation(status: str = "final", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": status,
        "category": [{"coding": [LAB]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}], "text": "Glucose"},
        "subject": {"reference": JAMES},
        "valueQuantity": {"value": 101, "unit": "mg/dL"},
        **extra,
    }


@dataclass
class Env:
    server: Server
    app: Any
    tokens: dict[str, str]

    def headers(self, who: str) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.tokens[who]}",
            "Content-Type": "application/fhir+json",
        }

    async def get(self, who: str, url: str, **params: str) -> httpx.Response:
        return await self.server.http.get(f"/fhir/{url}", params=params, headers=self.headers(who))

    async def post(self, who: str, url: str, body: dict[str, Any]) -> httpx.Response:
        return await self.server.http.post(f"/fhir/{url}", json=body, headers=self.headers(who))

    async def put(self, who: str, url: str, body: dict[str, Any]) -> httpx.Response:
        return await self.server.http.put(f"/fhir/{url}", json=body, headers=self.headers(who))


@pytest.fixture(scope="module")
async def env(mongo_uri: str) -> AsyncIterator[Env]:
    async with seeded_server(mongo_uri) as (app, http):
        server = Server(http)
        tokens = {w: await server.token(w, USER) for w in ("sponsor", "dr.rachel.kim")}
        signed = assertion(RSAKey.import_key(BACKEND["jwk"]), BACKEND["client_id"], "RS384")
        r = await request_token(server, signed, "system/*.rs")
        assert r.status_code == 200, r.text
        tokens["backend"] = r.json()["access_token"]
        yield Env(server, app, tokens)


def ids(bundle: dict[str, Any]) -> set[str]:
    return {
        f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", [])
    }


async def test_a_final_result_shows_to_the_patient_on_the_next_request(env: Env) -> None:
    r = await env.post("dr.rachel.kim", "Observation", observation())
    assert r.status_code == 201, r.text
    ref = f"Observation/{r.json()['id']}"
    seen = await env.get("sponsor", ref)
    assert seen.status_code == 200, seen.text
    assert ref in ids((await env.get("sponsor", "Observation", _id=ref.split("/")[1])).json())


async def test_an_unreleased_status_is_hidden_until_final(env: Env) -> None:
    r = await env.post("dr.rachel.kim", "Observation", observation("preliminary"))
    assert r.status_code == 201, r.text
    body = r.json()
    ref = f"Observation/{body['id']}"
    assert (await env.get("sponsor", ref)).status_code == 404
    assert (await env.get("dr.rachel.kim", ref)).status_code == 200
    final = await env.put("dr.rachel.kim", ref, {**body, "status": "final"})
    assert final.status_code == 200, final.text
    assert (await env.get("sponsor", ref)).status_code == 200
    # The preliminary version stays the patient's to not see (its own status hides it).
    assert (await env.get("sponsor", f"{ref}/_history/1")).status_code == 404
    assert (await env.get("sponsor", f"{ref}/_history/2")).status_code == 200


async def test_the_seeded_hold_hides_until_its_expiry(env: Env) -> None:
    assert (await env.get("sponsor", HELD)).status_code == 404
    doctor = await env.get("dr.rachel.kim", HELD)
    assert doctor.status_code == 200, doctor.text
    ext = [e for e in doctor.json().get("extension", []) if e["url"] == HOLD["extension"]]
    expires = next(p["valueDateTime"] for p in ext[0]["extension"] if p["url"] == "expires")
    at = datetime.fromisoformat(expires)
    with clock.fixed(at - timedelta(seconds=1)):
        assert (await env.get("sponsor", HELD)).status_code == 404
    with clock.fixed(at):
        shown = await env.get("sponsor", HELD)
        assert shown.status_code == 200, shown.text
        # The patient gets the result, not the clinicians' hold.
        assert all(e["url"] != HOLD["extension"] for e in shown.json().get("extension", []))


async def test_holds_the_table_forbids_are_refused(env: Env) -> None:
    now = datetime.now(UTC)
    too_long = instant(now + timedelta(days=HOLD["max_days"] + 1))
    cases = [
        (hold("preventing-harm", None), 422, "required"),
        (hold("because-i-said-so", instant(now + timedelta(days=1))), 422, "code-invalid"),
        (hold("preventing-harm", too_long), 422, "business-rule"),
        (hold("preventing-harm", instant(now - timedelta(hours=1))), 422, "business-rule"),
    ]
    for ext, status, code in cases:
        r = await env.post("dr.rachel.kim", "Observation", observation(extension=[ext]))
        assert r.status_code == status, r.text
        assert r.json()["issue"][0]["code"] == code, r.text
    # A patient writes no hold, not even on their own patient-reported Observation.
    vitals = {
        **observation(extension=[hold("preventing-harm", instant(now + timedelta(days=1)))]),
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ],
    }
    r = await env.post("sponsor", "Observation", vitals)
    assert r.status_code == 403, r.text


async def test_a_hold_and_its_release_are_audited_for_the_privacy_officer(env: Env) -> None:
    expires = instant(datetime.now(UTC) + timedelta(days=3))
    r = await env.post(
        "dr.rachel.kim", "Observation", observation(extension=[hold("preventing-harm", expires)])
    )
    assert r.status_code == 201, r.text
    body = r.json()
    ref = f"Observation/{body['id']}"
    assert (await env.get("sponsor", ref)).status_code == 404
    assert ref not in ids((await env.get("sponsor", "Observation", code="2345-7")).json())
    released = {**body, "extension": []}
    del released["extension"]
    r = await env.put("dr.rachel.kim", ref, released)
    assert r.status_code == 200, r.text
    assert (await env.get("sponsor", ref)).status_code == 200
    # Every version is the patient's again once released.
    assert (await env.get("sponsor", f"{ref}/_history/1")).status_code == 200
    trail = await env.get("backend", "AuditEvent", entity=ref, _sort="date")
    assert trail.status_code == 200, trail.text
    events = [e["resource"] for e in trail.json().get("entry", [])]
    subtypes = [
        c["code"]
        for ev in events
        for c in ev.get("subtype", [])
        if c["system"].endswith("result-release-event")
    ]
    assert subtypes == ["hold", "release"], subtypes
    reasons = {
        c["code"] for ev in events for p in ev.get("purposeOfEvent", []) for c in p["coding"]
    }
    assert "preventing-harm" in reasons
    who = {a["who"].get("reference") for ev in events for a in ev["agent"]}
    assert "Practitioner/pcm-rachel-kim" in who
    # The patient does not learn of the hold from "who looked at my record".
    mine = await env.get("sponsor", "AuditEvent", entity=ref)
    assert not [
        e
        for e in mine.json().get("entry", [])
        for c in e["resource"].get("subtype", [])
        if c["system"].endswith("result-release-event")
    ]


async def test_a_patients_own_delay_holds_that_category(env: Env) -> None:
    pid = JAMES.split("/")[1]
    params = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "category", "valueCode": "pathology"},
            {"name": "days", "valueInteger": 7},
        ],
    }
    r = await env.post("sponsor", f"Patient/{pid}/$result-delay", params)
    assert r.status_code == 200, r.text
    assert r.json()["resourceType"] == "Basic"
    # Someone else's delay is not theirs to set.
    other = await env.post("dr.rachel.kim", f"Patient/{pid}/$result-delay", params)
    assert other.status_code == 403, other.text
    bad = {**params, "parameter": [params["parameter"][0], {"name": "days", "valueInteger": 365}]}
    assert (await env.post("sponsor", f"Patient/{pid}/$result-delay", bad)).status_code == 422
    report = {
        "resourceType": "DiagnosticReport",
        "status": "final",
        "category": [{"coding": [PATHOLOGY]}],
        "code": {"text": "Skin biopsy"},
        "subject": {"reference": JAMES},
        "conclusion": "Benign.",
    }
    r = await env.post("dr.rachel.kim", "DiagnosticReport", report)
    assert r.status_code == 201, r.text
    body = r.json()
    ref = f"DiagnosticReport/{body['id']}"
    held = [e for e in body.get("extension", []) if e["url"] == HOLD["extension"]]
    assert held, body
    assert (await env.get("sponsor", ref)).status_code == 404
    with clock.fixed(datetime.now(UTC) + timedelta(days=7, minutes=1)):
        assert (await env.get("sponsor", ref)).status_code == 200
    # A lab result is not in the delayed category: shown at once.
    lab = await env.post("dr.rachel.kim", "Observation", observation())
    assert (await env.get("sponsor", f"Observation/{lab.json()['id']}")).status_code == 200
    # "After my clinician has called me": the clinician lifts the hold.
    lifted = {k: v for k, v in body.items() if k != "extension"}
    assert (await env.put("dr.rachel.kim", ref, lifted)).status_code == 200
    assert (await env.get("sponsor", ref)).status_code == 200
    # Withdrawn: the next pathology result shows at once.
    off = {**params, "parameter": [params["parameter"][0], {"name": "days", "valueInteger": 0}]}
    assert (await env.post("sponsor", f"Patient/{pid}/$result-delay", off)).status_code == 200
    r = await env.post("dr.rachel.kim", "DiagnosticReport", {**report, "conclusion": "x"})
    assert (await env.get("sponsor", f"DiagnosticReport/{r.json()['id']}")).status_code == 200


async def test_results_available_is_queued_for_when_the_patient_may_see_it(env: Env) -> None:
    queue = env.app.state.ctx.store.db.notifications
    r = await env.post("dr.rachel.kim", "Observation", observation())
    now_ref = f"Observation/{r.json()['id']}"
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    r = await env.post(
        "dr.rachel.kim",
        "Observation",
        observation(extension=[hold("preventing-harm", instant(expires))]),
    )
    held_body = r.json()
    held_ref = f"Observation/{held_body['id']}"
    shown = await queue.find({"result": now_ref}).to_list(10)
    assert shown and all(d["due"] <= datetime.now(UTC) for d in shown)
    assert all("valueQuantity" not in json.dumps(d, default=str) for d in shown)
    pending = await queue.find({"result": held_ref, "state": "pending"}).to_list(10)
    assert pending and all(d["due"] == expires for d in pending), pending
    # Released early: the queued one is cancelled and one due now takes its place.
    lifted = {k: v for k, v in held_body.items() if k != "extension"}
    assert (await env.put("dr.rachel.kim", held_ref, lifted)).status_code == 200
    after = await queue.find({"result": held_ref}).to_list(10)
    states = sorted((d["state"], d["due"] <= datetime.now(UTC)) for d in after)
    assert ("cancelled", False) in states and any(s != "cancelled" and n for s, n in states)
    _ = uuid  # ids of new resources come from the server


async def test_a_hold_on_a_released_result_hides_its_earlier_versions(env: Env) -> None:
    r = await env.post("dr.rachel.kim", "Observation", observation())
    body = r.json()
    ref = f"Observation/{body['id']}"
    assert (await env.get("sponsor", f"{ref}/_history/1")).status_code == 200
    expires = instant(datetime.now(UTC) + timedelta(days=2))
    held = {**body, "extension": [hold("preventing-harm", expires)]}
    r = await env.put("dr.rachel.kim", ref, held)
    assert r.status_code == 200, r.text
    for url in (ref, f"{ref}/_history/1", f"{ref}/_history/2"):
        assert (await env.get("sponsor", url)).status_code == 404, url
    hist = (await env.get("sponsor", "Observation/_history", _count="500")).json()
    assert ref not in ids(hist)
    assert (await env.get("dr.rachel.kim", f"{ref}/_history/1")).status_code == 200
    lifted = {k: v for k, v in r.json().items() if k != "extension"}
    assert (await env.put("dr.rachel.kim", ref, lifted)).status_code == 200
    for url in (ref, f"{ref}/_history/1", f"{ref}/_history/2", f"{ref}/_history/3"):
        assert (await env.get("sponsor", url)).status_code == 200, url
