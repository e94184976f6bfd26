"""Prescriptions end to end over HTTP with real SMART tokens from the login flow: the
eligibility extension on reads and searches, `$refill` with a pharmacy (idempotent while
open, 422 with its reason), the pharmacy moving the Task and dispensing, `$renew` to the
PCM who approves or declines, and two parallel refills of the last authorization."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from fhir_server.portal.prescriptions.table import load_table
from tests.integration.access.test_smart_enforcement import Server
from tests.integration.seeded import seeded_server

RULES = load_table()
SPONSOR = "Patient/sponsor-james-carter"
LISINOPRIL = "MedicationRequest/medrx-james-lisinopril"
NAPROXEN = "MedicationRequest/medrx-james-naproxen"
ATORVASTATIN = "MedicationRequest/medrx-james-atorvastatin"
PCM = "Practitioner/pcm-rachel-kim"
PHARMACY = "Location/pharmacy-fm"
PATIENT_SCOPE = "openid fhirUser user/*.cruds"


@pytest.fixture(scope="module")
async def env(mongo_uri: str) -> AsyncIterator[tuple[Server, dict[str, str]]]:
    async with seeded_server(mongo_uri) as (_, http):
        server = Server(http)
        tok = {
            "sponsor": await server.token("sponsor", PATIENT_SCOPE),
            "pcm": await server.token("practitioner", "openid fhirUser user/*.cruds"),
        }
        yield server, tok


def eligibility_of(mr: dict) -> tuple[str, str]:
    ext = next(e for e in mr.get("extension", []) if e["url"] == RULES.extension_url)
    parts = {e["url"]: e for e in ext["extension"]}
    return parts["eligibility"]["valueCode"], parts["reason"]["valueCoding"]["code"]


def refill_body(pharmacy: str = PHARMACY) -> dict:
    return {
        "resourceType": "Parameters",
        "parameter": [{"name": "pharmacy", "valueReference": {"reference": pharmacy}}],
    }


async def test_every_prescription_read_carries_its_eligibility(
    env: tuple[Server, dict[str, str]],
) -> None:
    server, tok = env
    r = await server.get(tok["sponsor"], "MedicationRequest", subject=SPONSOR)
    assert r.status_code == 200, r.text
    found = {f"MedicationRequest/{e['resource']['id']}": e["resource"] for e in r.json()["entry"]}
    assert eligibility_of(found[LISINOPRIL]) == ("refillable", "refills-remain")
    assert eligibility_of(found[NAPROXEN]) == ("renewable", "no-refills-left")
    assert eligibility_of(found[ATORVASTATIN]) == ("renewable", "expired")
    one = await server.get(tok["sponsor"], NAPROXEN)
    assert eligibility_of(one.json()) == ("renewable", "no-refills-left")


async def test_refill_then_pharmacy_dispenses(env: tuple[Server, dict[str, str]]) -> None:
    server, tok = env
    r = await server.post(tok["sponsor"], f"{LISINOPRIL}/$refill", refill_body())
    assert r.status_code == 201, r.text
    task = r.json()
    assert task["focus"]["reference"] == LISINOPRIL
    assert task["for"]["reference"] == SPONSOR
    assert task["owner"]["reference"] == PHARMACY
    assert task["intent"] == "order" and task["status"] == "requested"
    assert task["requester"]["reference"] == SPONSOR
    # Asked again while open: the open Task, 200.
    again = await server.post(tok["sponsor"], f"{LISINOPRIL}/$refill", refill_body())
    assert again.status_code == 200 and again.json()["id"] == task["id"]
    # The count moved: one refill fewer on the next read.
    mr = (await server.get(tok["sponsor"], LISINOPRIL)).json()
    ext = next(e for e in mr["extension"] if e["url"] == RULES.extension_url)
    left = {e["url"]: e for e in ext["extension"]}["refillsRemaining"]["valueUnsignedInt"]
    assert left == mr["dispenseRequest"]["numberOfRepeatsAllowed"] - 1
    # A patient may not move it on.
    moved = await server.http.put(
        f"/fhir/Task/{task['id']}",
        json={**task, "status": "completed"},
        headers={"Authorization": f"Bearer {tok['sponsor']}"},
    )
    assert moved.status_code == 422, moved.text
    # The pharmacy side moves it requested -> accepted -> in-progress -> completed.
    current = task
    for status in ("accepted", "in-progress"):
        current = {k: v for k, v in current.items() if k != "meta"} | {"status": status}
        r = await server.http.put(
            f"/fhir/Task/{task['id']}", json=current,
            headers={"Authorization": f"Bearer {tok['pcm']}"},
        )  # fmt: skip
        assert r.status_code == 200, r.text
        current = r.json()
    dispense = {
        "resourceType": "MedicationDispense",
        "status": "completed",
        "subject": {"reference": SPONSOR},
        "authorizingPrescription": [{"reference": LISINOPRIL}],
        "medicationCodeableConcept": mr["medicationCodeableConcept"],
        "whenHandedOver": "2026-01-05T10:00:00Z",
    }
    d = await server.post(tok["pcm"], "MedicationDispense", dispense)
    assert d.status_code == 201, d.text
    done = {k: v for k, v in current.items() if k != "meta"} | {
        "status": "completed",
        "output": [
            {
                "type": {"text": "dispense"},
                "valueReference": {"reference": f"MedicationDispense/{d.json()['id']}"},
            }
        ],
    }
    r = await server.http.put(
        f"/fhir/Task/{task['id']}", json=done, headers={"Authorization": f"Bearer {tok['pcm']}"}
    )
    assert r.status_code == 200, r.text
    # The patient sees it with plain searches.
    seen = await server.get(tok["sponsor"], "Task", focus=LISINOPRIL, status="completed")
    assert [e["resource"]["id"] for e in seen.json()["entry"]] == [task["id"]]
    disp = await server.get(tok["sponsor"], "MedicationDispense", prescription=LISINOPRIL)
    assert d.json()["id"] in {e["resource"]["id"] for e in disp.json().get("entry", [])}


async def test_wrong_requests_answer_their_422(env: tuple[Server, dict[str, str]]) -> None:
    server, tok = env
    r = await server.post(tok["sponsor"], f"{NAPROXEN}/$refill", refill_body())
    assert r.status_code == 422, r.text
    issue = r.json()["issue"][0]
    assert issue["code"] == "business-rule" and "renewal" in issue["diagnostics"]
    r = await server.post(
        tok["sponsor"], f"{LISINOPRIL}/$renew", {"resourceType": "Parameters", "parameter": []}
    )
    assert r.status_code == 422 and "request a refill instead" in r.text
    r = await server.post(tok["sponsor"], f"{LISINOPRIL}/$refill", refill_body(SPONSOR))
    assert r.status_code in (400, 422), r.text


async def test_renewal_approved_and_declined(env: tuple[Server, dict[str, str]]) -> None:
    server, tok = env
    note = {"resourceType": "Parameters", "parameter": [{"name": "note", "valueString": "out"}]}
    r = await server.post(tok["sponsor"], f"{NAPROXEN}/$renew", note)
    assert r.status_code == 201, r.text
    task = r.json()
    assert task["owner"]["reference"] == PCM and task["for"]["reference"] == SPONSOR
    proposal_ref = task["focus"]["reference"]
    proposal = (await server.get(tok["sponsor"], proposal_ref)).json()
    assert proposal["intent"] == "proposal"
    assert proposal["priorPrescription"]["reference"] == NAPROXEN
    assert proposal["requester"]["reference"] == SPONSOR
    again = await server.post(tok["sponsor"], f"{NAPROXEN}/$renew", note)
    assert again.status_code == 200 and again.json()["id"] == task["id"]
    # The PCM approves: a new order, then the Task completed with it as output.
    old = (await server.get(tok["pcm"], NAPROXEN)).json()
    order = {
        k: v for k, v in old.items() if k not in ("id", "meta", "extension", "dispenseRequest")
    } | {
        "priorPrescription": {"reference": NAPROXEN},
        "requester": {"reference": PCM},
        "dispenseRequest": {
            "numberOfRepeatsAllowed": 3,
            "validityPeriod": {"start": "2026-01-01", "end": "2099-01-01"},
        },
    }
    made = await server.post(tok["pcm"], "MedicationRequest", order)
    assert made.status_code == 201, made.text
    unfinished = {k: v for k, v in task.items() if k != "meta"} | {"status": "completed"}
    r = await server.http.put(
        f"/fhir/Task/{task['id']}", json=unfinished,
        headers={"Authorization": f"Bearer {tok['pcm']}"},
    )  # fmt: skip
    assert r.status_code == 422 and "Task.output" in r.text
    approved = unfinished | {
        "output": [
            {
                "type": {"text": "prescription"},
                "valueReference": {"reference": f"MedicationRequest/{made.json()['id']}"},
            }
        ]
    }
    r = await server.http.put(
        f"/fhir/Task/{task['id']}", json=approved, headers={"Authorization": f"Bearer {tok['pcm']}"}
    )
    assert r.status_code == 200, r.text
    assert (await server.get(tok["sponsor"], proposal_ref)).json()["status"] == "completed"
    new = (await server.get(tok["sponsor"], f"MedicationRequest/{made.json()['id']}")).json()
    assert eligibility_of(new) == ("refillable", "refills-remain")
    # Declined: the expired one, with a reason.
    r = await server.post(tok["sponsor"], f"{ATORVASTATIN}/$renew", note)
    assert r.status_code == 201, r.text
    t2 = {k: v for k, v in r.json().items() if k != "meta"} | {"status": "rejected"}
    no_reason = await server.http.put(
        f"/fhir/Task/{t2['id']}", json=t2, headers={"Authorization": f"Bearer {tok['pcm']}"}
    )
    assert no_reason.status_code == 422, no_reason.text
    t2["statusReason"] = {"text": "please book a visit first"}
    r = await server.http.put(
        f"/fhir/Task/{t2['id']}", json=t2, headers={"Authorization": f"Bearer {tok['pcm']}"}
    )
    assert r.status_code == 200, r.text
    proposal2 = (await server.get(tok["sponsor"], t2["focus"]["reference"])).json()
    assert proposal2["status"] == "cancelled"


async def test_two_parallel_refills_of_the_last_one(env: tuple[Server, dict[str, str]]) -> None:
    """One Task, one 422: the count is a conditional write in the Task's transaction."""
    server, tok = env
    last = {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "subject": {"reference": SPONSOR},
        "requester": {"reference": PCM},
        "medicationCodeableConcept": {"text": "lisinopril 10 MG Oral Tablet"},
        "dispenseRequest": {
            "numberOfRepeatsAllowed": 1,
            "validityPeriod": {"start": "2026-01-01", "end": "2099-01-01"},
        },
    }
    made = await server.post(tok["pcm"], "MedicationRequest", last)
    assert made.status_code == 201, made.text
    url = f"MedicationRequest/{made.json()['id']}/$refill"
    statuses: list[int] = []
    # Two different pharmacies, so neither is a repeat of the other's open request.

    async def one(pharmacy: str) -> None:
        statuses.append((await server.post(tok["sponsor"], url, refill_body(pharmacy))).status_code)

    async with anyio.create_task_group() as tg:
        tg.start_soon(one, PHARMACY)
        tg.start_soon(one, "Organization/lakeside-mmc")
    tasks = await server.get(tok["sponsor"], "Task", focus=f"MedicationRequest/{made.json()['id']}")
    assert len(tasks.json().get("entry", [])) == 1
    assert sorted(statuses) == [201, 422], statuses
