"""Booking with real SMART tokens on the seed population (docs/portal.md, "Appointments"):
find -> hold -> book as the sponsor for Liam, the Slot busy and the clipboard Task there;
cancel frees the Slot; reschedule is atomic; a held Slot is bookable by another patient once
the hold ran out; requests are answered by the clinic's team; Basic logins read only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from joserfc.jwk import RSAKey

from fhir_server import clock
from fhir_server.portal.scheduling import operations
from fhir_server.portal.scheduling.slots import parse_instant
from fhir_server.portal.scheduling.table import load_table
from tests.integration.access.test_smart_enforcement import Server
from tests.integration.auth.conftest import BACKEND
from tests.integration.auth.test_backend_services import assertion, request_token
from tests.integration.seeded import seeded_server

LIAM = "Patient/child-liam-carter"
SOPHIA = "Patient/adolescent-sophia-carter"
JAMES = "Patient/sponsor-james-carter"
EMMA = "Patient/dependent-emma-carter"
FM = "Location/loc-family-medicine"
TABLE = load_table()
SYSTEM = TABLE.system
CLIP = TABLE.clipboard_task.code
REQ = TABLE.request_task.code
USER = "openid fhirUser user/*.cruds"


@dataclass
class Env:
    s: Server
    tokens: dict[str, str]
    app: Any

    async def get(self, who: str, url: str, **params: str) -> httpx.Response:
        return await self.s.get(self.tokens[who], url, **params)

    async def post(self, who: str, url: str, body: Any) -> httpx.Response:
        return await self.s.post(self.tokens[who], url, body)

    async def find(self, who: str, patient: str, code: str, **extra: str) -> list[dict]:
        r = await self.get(
            who, "Appointment/$find", patient=patient, **{"service-type": f"{SYSTEM}|{code}"},
            location=FM, **extra,
        )  # fmt: skip
        assert r.status_code == 200, r.text
        return [e["resource"] for e in r.json().get("entry", [])]

    async def slot(self, ref: str) -> dict:
        r = await self.get("backend", ref)
        assert r.status_code == 200, r.text
        return dict(r.json())


@pytest.fixture(scope="module")
async def env(mongo_uri: str) -> AsyncIterator[Env]:
    async with seeded_server(mongo_uri) as (app, http):
        s = Server(http)
        tokens = {
            "sponsor": await s.token("sponsor", USER),
            "basic": await s.token("basic-user", USER),
            "nurse": await s.token("rn.jessica.moore", USER),
            "emma": await s.token("adult-dependent-no-grant", USER),
        }
        key = RSAKey.import_key(BACKEND["jwk"])
        r = await request_token(s, assertion(key, BACKEND["client_id"], "RS384"), "system/*.rs")
        assert r.status_code == 200, r.text
        tokens["backend"] = r.json()["access_token"]
        yield Env(s, tokens, app)


def _slot_ref(appt: dict) -> str:
    return str(appt["slot"][0]["reference"])


async def _tasks(env: Env, appt_ref: str, by: str = "based-on") -> list[dict]:
    r = await env.get("backend", "Task", **{by: appt_ref})
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", [])]


async def test_find_hold_book_cancel_as_sponsor_for_liam(env: Env) -> None:
    found = await env.find("sponsor", LIAM, "wellness")
    assert found, "free wellness slots for Liam"
    now = clock.now()
    for a in found:
        assert a["status"] == "proposed"
        assert parse_instant(a["start"]) >= now + timedelta(minutes=120)  # type: ignore[operator]
    proposed = found[0]
    slot = _slot_ref(proposed)
    r = await env.post("sponsor", "Appointment/$hold", proposed)
    assert r.status_code in (200, 201), r.text
    held = r.json()
    assert held["status"] == "pending"
    seen = await env.get("sponsor", slot)
    assert seen.json()["status"] == "busy-tentative"
    assert "Appointment/" not in seen.text  # who holds it is not directory data
    # Another family member's booking of the held Slot loses.
    other = {**proposed, "participant": [{"actor": {"reference": JAMES}, "status": "needs-action"}]}
    r = await env.post("sponsor", "Appointment/$book", other)
    assert r.status_code == 409, r.text
    assert slot in r.json()["issue"][0]["diagnostics"]
    r = await env.post("sponsor", "Appointment/$book", held)
    assert r.status_code in (200, 201), r.text
    booked = r.json()
    assert booked["status"] == "booked" and booked["id"] == held["id"]
    actors = {p["actor"]["reference"] for p in booked["participant"]}
    assert LIAM in actors and any(a.startswith("Practitioner/") for a in actors)
    assert (await env.slot(slot))["status"] == "busy"
    appt_ref = f"Appointment/{booked['id']}"
    tasks = await _tasks(env, appt_ref)
    assert len(tasks) == 1
    t = tasks[0]
    assert t["status"] == "requested" and t["intent"] == "order"
    assert t["code"]["coding"][0]["code"] == CLIP["code"]
    assert t["for"]["reference"] == LIAM and t["owner"]["reference"] == LIAM
    assert t["focus"]["reference"] == "Questionnaire/previsit-clipboard"
    assert t["executionPeriod"]["end"] == booked["start"]
    # The sponsor finds Liam's open clipboard with a plain Task search.
    r = await env.get("sponsor", "Task", patient=LIAM, code=f"{CLIP['system']}|{CLIP['code']}")
    assert t["id"] in {e["resource"]["id"] for e in r.json().get("entry", [])}
    # Booking again over it: the same patient overlaps.
    r = await env.post("nurse", "Appointment/$book", {**proposed, "slot": proposed["slot"]})
    assert r.status_code == 409
    r = await env.post(
        "sponsor",
        f"Appointment/{booked['id']}/$cancel",
        {
            "resourceType": "Parameters",
            "parameter": [{"name": "reason", "valueString": "conflict"}],
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"
    assert (await env.slot(slot))["status"] == "free"
    assert [x["status"] for x in await _tasks(env, appt_ref)] == ["cancelled"]


async def test_overlapping_booking_of_the_same_patient_names_it(env: Env) -> None:
    found = await env.find("sponsor", LIAM, "follow-up")
    first = found[0]
    r = await env.post("sponsor", "Appointment/$book", first)
    assert r.status_code in (200, 201), r.text
    booked = r.json()
    # A Slot of another clinician at the same time (built by hand: seed slots differ by time).
    await env.app.state.ctx.store.update("Slot", "twin-slot", {
        "resourceType": "Slot", "schedule": {"reference": "Schedule/schedule-pcm-laura-chen"},
        "status": "free", "start": first["start"], "end": first["end"],
        "serviceType": [TABLE.concept(TABLE.clinics[0].visit_types[1])],
    })  # fmt: skip
    twin = {**first, "slot": [{"reference": "Slot/twin-slot"}]}
    twin["participant"] = [p for p in first["participant"] if p["actor"]["reference"] == LIAM]
    r = await env.post("sponsor", "Appointment/$book", twin)
    assert r.status_code == 409, r.text
    assert f"Appointment/{booked['id']}" in r.json()["issue"][0]["diagnostics"]


async def test_basic_login_reads_but_cannot_book(env: Env) -> None:
    r = await env.get("basic", "Appointment", patient="Patient/robert-alvarez")
    assert r.status_code == 200
    proposed = {"resourceType": "Appointment", "status": "proposed", "slot": [{"reference": "Slot/slot-michael-wd05-1300"}],
                "participant": [{"actor": {"reference": "Patient/robert-alvarez"}, "status": "needs-action"}]}  # fmt: skip
    for op in ("$book", "$hold"):
        r = await env.post("basic", f"Appointment/{op}", proposed)
        assert r.status_code == 403, r.text
        assert r.json()["resourceType"] == "OperationOutcome"


async def test_rules_refuse_with_business_rule(env: Env) -> None:
    # A parent may not book a confidential adolescent visit for Sophia.
    r = await env.post("sponsor", "Appointment/$book", {
        "resourceType": "Appointment", "status": "proposed",
        "serviceType": [{"coding": [{"system": SYSTEM, "code": "adolescent-confidential"}]}],
        "slot": [{"reference": "Slot/slot-rachel-wd06-0900"}],
        "participant": [{"actor": {"reference": SOPHIA}, "status": "needs-action"}],
    })  # fmt: skip
    assert r.status_code == 422, r.text
    issue = r.json()["issue"][0]
    assert issue["code"] == "business-rule" and "adolescent" in issue["diagnostics"]
    # Request-only: a procedure is not booked online.
    r = await env.post("sponsor", "Appointment/$book", {
        "resourceType": "Appointment", "status": "proposed",
        "serviceType": [{"coding": [{"system": SYSTEM, "code": "procedure"}]}],
        "slot": [{"reference": "Slot/slot-rachel-wd06-0900"}],
        "participant": [{"actor": {"reference": LIAM}, "status": "needs-action"}],
    })  # fmt: skip
    assert r.status_code == 422 and "request" in r.text
    # Horizon: acute sick calls only 3 days out.
    r = await env.post("sponsor", "Appointment/$book", {
        "resourceType": "Appointment", "status": "proposed",
        "serviceType": [{"coding": [{"system": SYSTEM, "code": "acute"}]}],
        "slot": [{"reference": "Slot/slot-rachel-wd09-0900"}],
        "participant": [{"actor": {"reference": LIAM}, "status": "needs-action"}],
    })  # fmt: skip
    assert r.status_code == 422 and "days ahead" in r.text
    # A plain POST of a booked Appointment obeys the same rules (it used to leave the Slot free).
    r = await env.post("sponsor", "Appointment", {
        "resourceType": "Appointment", "status": "booked",
        "serviceType": [{"coding": [{"system": SYSTEM, "code": "acute"}]}],
        "slot": [{"reference": "Slot/slot-rachel-wd09-0900"}],
        "participant": [{"actor": {"reference": LIAM}, "status": "accepted"}],
    })  # fmt: skip
    assert r.status_code == 422, r.text


async def test_hold_expires_and_another_patient_books(env: Env) -> None:
    found = await env.find("emma", EMMA, "wellness")
    proposed = found[-1]
    r = await env.post("emma", "Appointment/$hold", proposed)
    assert r.status_code in (200, 201), r.text
    slot = _slot_ref(proposed)
    mine = {**proposed, "participant": [{"actor": {"reference": LIAM}, "status": "needs-action"}]}
    r = await env.post("sponsor", "Appointment/$book", mine)
    assert r.status_code == 409 and slot in r.text
    later = clock.now() + timedelta(minutes=TABLE.clinics[0].visit_types[0].hold.seconds // 60 + 1)
    with clock.fixed(later):
        assert (await env.get("sponsor", slot)).json()["status"] == "free"
        assert slot in {
            _slot_ref(a) for a in await env.find("sponsor", LIAM, "wellness", _count="500")
        }
        r = await env.post("sponsor", "Appointment/$book", mine)
        assert r.status_code in (200, 201), r.text
    assert (await env.slot(slot))["status"] == "busy"


async def _slot_search(env: Env, who: str, **params: str) -> set[str]:
    r = await env.get(who, "Slot", **params)
    assert r.status_code == 200, r.text
    return {f"Slot/{e['resource']['id']}" for e in r.json().get("entry", [])}


async def _slot_count(env: Env, **params: str) -> int:
    r = await env.get("backend", "Slot", _summary="count", **params)
    assert r.status_code == 200, r.text
    return int(r.json()["total"])


async def test_slot_status_search_reads_an_expired_hold_as_free(env: Env) -> None:
    """`Slot?status=` answers by the status as read: a live hold is busy-tentative, one that
    ran out is free (search/effective.py, slots.status_filter)."""
    found = await env.find("emma", EMMA, "wellness")
    proposed = found[len(found) // 2]
    r = await env.post("emma", "Appointment/$hold", proposed)
    assert r.status_code in (200, 201), r.text
    slot = _slot_ref(proposed)
    rid = slot.split("/", 1)[1]
    at = {"start": proposed["start"]}  # no `_id`: the status keys and the date do the lookup

    def by(status: str, **more: str) -> dict[str, str]:
        return {"status": status, **at, **more}

    assert slot in await _slot_search(env, "backend", **by("busy-tentative"))
    assert slot in await _slot_search(env, "sponsor", **by("busy-tentative"))
    assert slot not in await _slot_search(env, "backend", **by("free"))
    assert slot not in await _slot_search(env, "backend", **{"status:not": "busy-tentative"}, **at)
    assert slot in await _slot_search(env, "backend", **{"status:not": "free"}, **at)
    assert await _slot_count(env, status="free", _id=rid) == 0
    assert await _slot_count(env, status="busy-tentative", _id=rid) == 1

    later = clock.now() + timedelta(minutes=TABLE.clinics[0].visit_types[0].hold.seconds // 60 + 1)
    with clock.fixed(later):
        assert slot in await _slot_search(env, "backend", **by("free"))
        assert slot in await _slot_search(env, "sponsor", **by("free"))
        assert slot in await _slot_search(env, "backend", **by("|free"))  # `code`: no system
        assert slot not in await _slot_search(env, "backend", **by("busy-tentative"))
        assert slot in await _slot_search(env, "backend", **by("busy-tentative,free"))
        assert slot in await _slot_search(env, "backend", **{"status:not": "busy-tentative"}, **at)
        assert slot not in await _slot_search(env, "backend", **{"status:not": "free"}, **at)
        assert await _slot_count(env, status="free", _id=rid) == 1
        assert await _slot_count(env, status="busy-tentative", _id=rid) == 0
        # Stored, it is still the held version: the rule is applied on read only.
        r = await env.get("backend", "Slot", _id=rid, status="busy")
        assert r.json().get("total", 0) == 0


async def test_reschedule_is_atomic(env: Env) -> None:
    found = await env.find("sponsor", JAMES, "follow-up")
    r = await env.post("sponsor", "Appointment/$book", found[0])
    assert r.status_code in (200, 201), r.text
    old = r.json()
    new = found[1]

    async def boom() -> None:
        raise RuntimeError("the second half dies")

    operations.between_halves = boom
    try:
        r = await env.post("sponsor", f"Appointment/{old['id']}/$reschedule", {
            "resourceType": "Parameters", "parameter": [{"name": "appointment", "resource": new}],
        })  # fmt: skip
        assert r.status_code == 500
    finally:
        operations.between_halves = None
    assert (await env.get("sponsor", f"Appointment/{old['id']}")).json()["status"] == "booked"
    assert (await env.slot(_slot_ref(old)))["status"] == "busy"
    assert (await env.slot(_slot_ref(new)))["status"] == "free"
    r = await env.post("sponsor", f"Appointment/{old['id']}/$reschedule", {
        "resourceType": "Parameters", "parameter": [{"name": "appointment", "resource": new}],
    })  # fmt: skip
    assert r.status_code in (200, 201), r.text
    assert r.json()["status"] == "booked"
    assert (await env.get("sponsor", f"Appointment/{old['id']}")).json()["status"] == "cancelled"
    assert (await env.slot(_slot_ref(old)))["status"] == "free"
    assert (await env.slot(_slot_ref(new)))["status"] == "busy"


async def test_request_answered_by_the_team(env: Env) -> None:
    request = {
        "resourceType": "Appointment", "status": "proposed",
        "serviceType": [{"coding": [{"system": SYSTEM, "code": "procedure"}]}],
        "reasonCode": [{"text": "Wart removal"}],
        "requestedPeriod": [{"start": clock.now().date().isoformat(),
                             "end": (clock.now() + timedelta(days=20)).date().isoformat()}],
        "participant": [{"actor": {"reference": LIAM}, "status": "needs-action"},
                        {"actor": {"reference": FM}, "status": "needs-action"}],
    }  # fmt: skip
    r = await env.post(
        "sponsor", "Appointment", {k: v for k, v in request.items() if k != "reasonCode"}
    )
    assert r.status_code == 422 and "reason" in r.text
    r = await env.post("sponsor", "Appointment", request)
    assert r.status_code == 201, r.text
    req_id = r.json()["id"]
    tasks = await _tasks(env, f"Appointment/{req_id}", "focus")
    assert [t["owner"]["reference"] for t in tasks] == [TABLE.clinics[0].scheduling_team]
    assert tasks[0]["code"]["coding"][0]["code"] == REQ["code"]
    # The team books it on Liam's behalf onto a Slot.
    answer = {**r.json(), "slot": [{"reference": "Slot/slot-rachel-wd07-1400"}]}
    r = await env.post("nurse", "Appointment/$book", answer)
    assert r.status_code in (200, 201), r.text
    assert r.json()["status"] == "booked"
    assert [t["status"] for t in await _tasks(env, f"Appointment/{req_id}", "focus")] == [
        "completed"
    ]
    # A second request, declined with a reason.
    r = await env.post("sponsor", "Appointment", request)
    second = r.json()["id"]
    r = await env.post("nurse", f"Appointment/{second}/$cancel", {
        "resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "Please see your PCM first"}],
    })  # fmt: skip
    assert r.status_code == 200, r.text
    mine = await env.get("sponsor", f"Appointment/{second}")
    assert mine.json()["status"] == "cancelled"
    assert mine.json()["cancelationReason"]["text"] == "Please see your PCM first"
    assert [t["status"] for t in await _tasks(env, f"Appointment/{second}", "focus")] == [
        "rejected"
    ]


async def test_booking_and_cancelling_notify_the_patient_and_the_team(env: Env) -> None:
    from fhir_server.notify.queue import NotifyStore
    from fhir_server.portal.scheduling import notices

    store = NotifyStore(env.app.state.ctx.store.db)
    team = TABLE.clinics[0].scheduling_team
    for sid, topic, key in (
        ("sched-booked", notices.BOOKED, JAMES),
        ("sched-cancelled", notices.CANCELLED, JAMES),
        ("sched-team", notices.TEAM, team),
    ):
        await store.add_subscription(
            {"_id": sid, "topic": topic, "match": [key], "status": "active", "owner": key}, None
        )
    found = await env.find("sponsor", JAMES, "wellness")
    r = await env.post("sponsor", "Appointment/$book", found[0])
    assert r.status_code in (200, 201), r.text
    ref = f"Appointment/{r.json()['id']}"
    queued = await store.queue.find({"focus": ref}).to_list(None)
    assert sorted(q["sub"] for q in queued) == ["sched-booked", "sched-team"]
    r = await env.post("sponsor", f"{ref}/$cancel", {"resourceType": "Parameters", "parameter": []})
    assert r.status_code == 200, r.text
    queued = await store.queue.find({"focus": ref}).to_list(None)
    assert sorted(q["sub"] for q in queued) == [
        "sched-booked",
        "sched-cancelled",
        "sched-team",
        "sched-team",
    ]
    assert all(q["kind"] == "rest-hook" and "to" not in q for q in queued)


async def test_the_clipboard_answered_completes_its_task(env: Env) -> None:
    """The contract with the clipboards workflow (portal/clipboards.py): the Task this
    booking made is completed by the sponsor's completed answers for Liam."""
    from seed_data.common import Clock
    from seed_data.documents import james_previsit_answers

    found = await env.find("sponsor", LIAM, "wellness")
    r = await env.post("sponsor", "Appointment/$book", found[3])
    assert r.status_code in (200, 201), r.text
    ref = f"Appointment/{r.json()['id']}"
    (task,) = await _tasks(env, ref)
    seed = james_previsit_answers(Clock(clock.now().date()))
    qr = {k: seed[k] for k in ("resourceType", "questionnaire", "status", "item")}
    qr["subject"] = {"reference": LIAM}
    r = await env.post("sponsor", "QuestionnaireResponse", qr)
    assert r.status_code == 201, r.text
    (done,) = await _tasks(env, ref)
    assert done["id"] == task["id"] and done["status"] == "completed"
    assert done["output"][0]["valueReference"]["reference"].endswith(r.json()["id"])
