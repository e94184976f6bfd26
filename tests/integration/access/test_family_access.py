"""Families and proxies through the whole app: grants revoked at once, labels on writes,
a launch in a dependent's context. Relationships are the seed's FHIR data."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.integration.access.test_smart_enforcement import Server, ids, server  # noqa: F401

ROOT = Path(__file__).resolve().parents[3]
SPONSOR = "Patient/sponsor-james-carter"
SOPHIA = "Patient/adolescent-sophia-carter"
LIAM = "Patient/child-liam-carter"
DANIEL_COND = "Condition/cond-daniel-mcl-injury"
GRANT = "Consent/consent-daniel-proxy-james"
USER = "openid fhirUser user/*.cruds"


async def put(s: Server, token: str, url: str, body: dict) -> httpx.Response:
    return await s.http.put(
        f"/fhir/{url}",
        json=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"},
    )


async def test_revoking_a_grant_takes_effect_at_once(server: Server) -> None:  # noqa: F811
    james = await server.token("sponsor", USER)
    daniel = await server.token("adult-dependent-granted", USER)
    assert (await server.get(james, DANIEL_COND)).status_code == 200
    consent = (await server.get(daniel, GRANT)).json()
    revoked = await put(server, daniel, GRANT, {**consent, "status": "inactive"})
    assert revoked.status_code == 200, revoked.text
    # The same token, the very next request: the grant is gone.
    assert (await server.get(james, DANIEL_COND)).status_code == 404
    assert "Patient/dependent-daniel-carter" not in ids(
        (await server.get(james, "Patient", _count="50")).json()
    )
    restored = await put(server, daniel, GRANT, {**consent, "status": "active"})
    assert restored.status_code == 200, restored.text
    assert (await server.get(james, DANIEL_COND)).status_code == 200


async def test_a_proxy_cannot_add_or_remove_labels(server: Server) -> None:  # noqa: F811
    james = await server.token("sponsor", USER)
    obs = (await server.get(james, "Observation/obs-liam-peanut-ige")).json()
    labelled = {
        **obs,
        "meta": {
            "security": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}
            ]
        },
    }
    r = await put(server, james, "Observation/obs-liam-peanut-ige", labelled)
    assert r.status_code == 403, r.text
    harmless = {
        **obs,
        "meta": {
            "security": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "N"}
            ]
        },
    }
    r = await put(server, james, "Observation/obs-liam-peanut-ige", harmless)
    assert r.status_code == 403, r.text  # even a label that hides nothing
    created = await server.post(
        james,
        "Observation",
        {**{k: v for k, v in labelled.items() if k != "id"}},
    )
    assert created.status_code == 403
    # Nor may the patient relabel their own records (writes.json: labels are protected;
    # results are the clinic's).
    own = (await server.get(james, "Observation", subject=SPONSOR, _count="1")).json()
    mine = own["entry"][0]["resource"]
    r = await put(server, james, f"Observation/{mine['id']}", {**mine, "meta": harmless["meta"]})
    assert r.status_code == 403, r.text


async def test_a_proxy_writes_only_what_it_could_read(server: Server) -> None:  # noqa: F811
    james = await server.token("sponsor", USER)
    note = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "steps"},
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "activity",
                    }
                ]
            }
        ],
        "subject": {"reference": SOPHIA},
    }
    # Observation is not a type a parent sees of a 12-17 year old.
    assert (await server.post(james, "Observation", note)).status_code == 403
    assert (
        await server.post(james, "Observation", {**note, "subject": {"reference": LIAM}})
    ).status_code == 201


async def test_launch_in_an_adolescents_context_is_restricted(server: Server) -> None:  # noqa: F811
    token = await server.token("sponsor", "launch/patient patient/*.rs", patient=SOPHIA)
    found = ids((await server.get(token, "Appointment", _count="100")).json())
    assert "Appointment/appt-sophia-well-visit" in found
    assert "Appointment/appt-sophia-reproductive-health" not in found
    assert (await server.get(token, "Observation")).json()["total"] == 0
    assert (await server.get(token, "Communication")).json()["total"] == 0
    every = (await server.get(token, "", _type="Appointment,Observation,Immunization")).json()
    assert all(r.startswith(("Appointment/", "Immunization/")) for r in ids(every))
    history = (await server.get(token, "_history", _count="500")).json()
    # The band's types, plus directory data (Practitioner, Slot...), which everyone reads.
    directory = json.loads((ROOT / "profiles/access/clinicians.json").read_text())["directory"]
    band = {"Patient", "Appointment", "Immunization", "AllergyIntolerance"}
    assert all(
        e["resource"]["resourceType"] in band | set(directory["types"])
        for e in history["entry"]
        if "resource" in e
    )
    assert any(e["resource"]["resourceType"] == "Appointment" for e in history["entry"])
    assert history["total"] == len(history["entry"])


async def test_the_spouse_sees_nothing_of_the_adult_daughter(server: Server) -> None:  # noqa: F811
    maria = await server.token("spouse", USER)
    assert (await server.get(maria, "Patient/dependent-emma-carter")).status_code == 404
    assert (await server.get(maria, "Condition", patient="Patient/dependent-emma-carter")).json()[
        "total"
    ] == 0


async def test_validate_delete_answers_hidden_as_missing(server: Server) -> None:  # noqa: F811
    james = await server.token("sponsor", USER)
    hidden = await server.post(
        james, "Observation/obs-sophia-chlamydia-naat/$validate?mode=delete", {}
    )
    missing = await server.post(james, "Observation/no-such-obs/$validate?mode=delete", {})
    assert hidden.status_code == missing.status_code == 404
