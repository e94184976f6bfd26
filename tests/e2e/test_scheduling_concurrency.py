"""Double booking across two server processes on one database (docs/portal.md,
"Appointments"): 50 truly parallel `$book` calls from different patients on one Slot give
exactly one booked Appointment, the Slot busy once and 49 x 409 naming the Slot; one
patient booking two overlapping Slots in parallel gets one of them.

Tokens are off here (the scheduling team's view: the slot and overlap checks apply to every
caller; tests/integration/portal/test_scheduling.py covers the patients' rules with tokens).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from threading import Barrier

import httpx

from fhir_server.portal.scheduling.table import load_table
from tests.e2e.conftest import shared_db_env

N = 50
JSON = {"Content-Type": "application/fhir+json"}
TABLE = load_table()
CLINIC = TABLE.clinics[0]
VISIT = CLINIC.visit_types[0]
LOCATION = sorted(CLINIC.locations)[0]


def _put(base: str, body: dict) -> None:
    r = httpx.put(
        f"{base}/{body['resourceType']}/{body['id']}", json=body, headers=JSON, timeout=30
    )
    assert r.status_code in (200, 201), r.text


def _slot(base: str, sid: str, start: datetime) -> dict:
    slot = {
        "resourceType": "Slot",
        "id": sid,
        "schedule": {"reference": "Schedule/race-schedule"},
        "status": "free",
        "serviceType": [TABLE.concept(VISIT)],
        "start": start.isoformat(),
        "end": (start + timedelta(minutes=30)).isoformat(),
    }
    _put(base, slot)
    return slot


def _proposed(sid: str, patient: str) -> dict:
    return {
        "resourceType": "Appointment",
        "status": "proposed",
        "serviceType": [TABLE.concept(VISIT)],
        "slot": [{"reference": f"Slot/{sid}"}],
        "participant": [{"actor": {"reference": patient}, "status": "needs-action"}],
    }


def _setup(base: str) -> datetime:
    # One transaction Bundle: fifty-odd PUTs one by one would be most of the test's time.
    resources = [
        {"resourceType": "Location", "id": LOCATION.split("/")[1], "status": "active"},
        {"resourceType": "Practitioner", "id": "race-doc"},
        {
            "resourceType": "Schedule",
            "id": "race-schedule",
            "active": True,
            "actor": [{"reference": "Practitioner/race-doc"}, {"reference": LOCATION}],
        },
        *({"resourceType": "Patient", "id": f"racer-{i}"} for i in range(N)),
    ]
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
            for r in resources
        ],
    }
    r = httpx.post(base, json=bundle, headers=JSON, timeout=60)
    assert r.status_code == 200, r.text
    return datetime.now(UTC).replace(microsecond=0) + timedelta(days=7)


def test_parallel_bookings_across_two_processes(live_server, mongo_uri):
    # One pair of processes for both races: starting servers is most of the cost.
    env = shared_db_env(mongo_uri)
    a, b = live_server(**env), live_server(**env)
    start = _setup(a.base)
    _fifty_patients_one_slot(a, b, start)
    _one_patient_two_overlapping_slots(a, b, start + timedelta(days=1))


def _fifty_patients_one_slot(a, b, start):
    _slot(a.base, "race-slot", start)
    barrier = Barrier(N)

    def attempt(i: int) -> httpx.Response:
        base = (a, b)[i % 2].base
        body = _proposed("race-slot", f"Patient/racer-{i}")
        barrier.wait()
        return httpx.post(f"{base}/Appointment/$book", json=body, headers=JSON, timeout=120)

    with ThreadPoolExecutor(N) as pool:
        answers = list(pool.map(attempt, range(N)))
    statuses = sorted(r.status_code for r in answers)
    assert statuses.count(201) + statuses.count(200) == 1, statuses
    assert statuses.count(409) == N - 1, statuses
    for r in answers:
        if r.status_code == 409:
            assert "Slot/race-slot" in r.json()["issue"][0]["diagnostics"], r.text
    booked = httpx.get(f"{b.base}/Appointment", params={"slot": "Slot/race-slot"}).json()
    assert [e["resource"]["status"] for e in booked.get("entry", [])] == ["booked"]
    assert httpx.get(f"{a.base}/Slot/race-slot").json()["status"] == "busy"
    hist = httpx.get(f"{a.base}/Slot/race-slot/_history").json()
    assert [e["resource"]["status"] for e in hist["entry"]] == ["busy", "free"]


def _one_patient_two_overlapping_slots(a, b, start):
    _slot(a.base, "left", start)
    _slot(a.base, "right", start + timedelta(minutes=10))
    barrier = Barrier(2)

    def attempt(i: int) -> httpx.Response:
        body = _proposed(("left", "right")[i], "Patient/racer-0")
        barrier.wait()
        return httpx.post(
            f"{(a, b)[i].base}/Appointment/$book", json=body, headers=JSON, timeout=120
        )

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(attempt, range(2)))
    statuses = sorted(r.status_code for r in answers)
    assert statuses in ([201, 409], [200, 409]), [r.text for r in answers]
    lost = next(r for r in answers if r.status_code == 409)
    assert "Appointment/" in lost.json()["issue"][0]["diagnostics"], lost.text
    free = [httpx.get(f"{a.base}/Slot/{s}").json()["status"] for s in ("left", "right")]
    assert sorted(free) == ["busy", "free"]
