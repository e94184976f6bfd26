"""Leak paths of the prescriptions workflow: an adolescent's prescriptions and refill Tasks
never reach a parent beyond the family table (whose adolescent band has no
MedicationRequest or Task), and patient A never sees or acts on B's prescriptions: each
path answers exactly as for a prescription that does not exist. The adolescent's own token
is the positive control."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.integration.access.test_leak_matrix import TABLE, _same_as_missing
from tests.integration.access.test_smart_enforcement import Server
from tests.integration.seeded import seeded_server

TEEN_RX = "MedicationRequest/medrx-sophia-albuterol"
CHILD_RX = "MedicationRequest/medrx-liam-hydrocortisone"
JAMES_RX = "MedicationRequest/medrx-james-lisinopril"
SCOPE = "openid fhirUser user/*.cruds"
PHARMACY = {
    "resourceType": "Parameters",
    "parameter": [{"name": "pharmacy", "valueReference": {"reference": "Location/pharmacy-fm"}}],
}


@pytest.fixture(scope="module")
async def env(mongo_uri: str) -> AsyncIterator[tuple[Server, dict[str, str]]]:
    async with seeded_server(mongo_uri) as (_, http):
        server = Server(http)
        tok = {r: await server.token(r, SCOPE) for r in ("sponsor", "spouse", "cac-user")}
        yield server, tok


def found(r: object) -> set[str]:
    body = r.json()  # type: ignore[attr-defined]
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in body.get("entry", [])}


async def test_a_parent_may_refill_for_a_child_never_for_an_adolescent(
    env: tuple[Server, dict[str, str]],
) -> None:
    server, tok = env
    assert "MedicationRequest" not in TABLE["bands"]["adolescent"]["types"]
    child = await server.post(tok["sponsor"], f"{CHILD_RX}/$refill", PHARMACY)
    assert child.status_code == 201, child.text
    for parent in ("sponsor", "spouse"):
        token = tok[parent]
        for op in ("$refill", "$renew"):
            body = PHARMACY if op == "$refill" else {"resourceType": "Parameters"}
            _same_as_missing(
                await server.post(token, f"{TEEN_RX}/{op}", body),
                await server.post(token, f"MedicationRequest/no-such/{op}", body),
            )
        _same_as_missing(
            await server.get(token, TEEN_RX), await server.get(token, "MedicationRequest/no-such")
        )
        for rt, params in (
            ("MedicationRequest", {"subject": "Patient/adolescent-sophia-carter"}),
            ("MedicationRequest", {"_count": "200"}),
            ("Task", {"focus": TEEN_RX}),
            ("Task", {"patient": "Patient/adolescent-sophia-carter"}),
            ("MedicationDispense", {"prescription": TEEN_RX}),
        ):
            r = await server.get(token, rt, **params)
            assert r.status_code == 200, r.text
            assert not any("sophia" in f for f in found(r)), (parent, rt, params)


async def test_one_patient_never_sees_or_refills_anothers(
    env: tuple[Server, dict[str, str]],
) -> None:
    server, tok = env
    token = tok["cac-user"]
    _same_as_missing(
        await server.post(token, f"{JAMES_RX}/$refill", PHARMACY),
        await server.post(token, "MedicationRequest/no-such/$refill", PHARMACY),
    )
    _same_as_missing(
        await server.get(token, JAMES_RX), await server.get(token, "MedicationRequest/no-such")
    )
    plain = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "code": {
            "coding": [
                {
                    "system": "https://mhs.example.org/fhir/CodeSystem/portal-task",
                    "code": "refill-request",
                }
            ]
        },
        "focus": {"reference": JAMES_RX},
        "for": {"reference": "Patient/sponsor-james-carter"},
        "owner": {"reference": "Location/pharmacy-fm"},
    }
    r = await server.post(token, "Task", plain)
    assert r.status_code in (403, 404), r.text
    r = await server.get(token, "Task", focus=JAMES_RX)
    assert found(r) == set()
