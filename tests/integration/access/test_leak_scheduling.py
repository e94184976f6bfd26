"""The leak matrix on the booking paths (docs/portal.md, "Appointments"): an adolescent's
confidential visit, booked by the clinic, is labelled, so neither parent learns of it on any
path (read, search, `_revinclude`, `$everything`-style patient search, the Slot it took, the
Tasks, `$cancel`/`$reschedule`, `$book` over it); and no patient finds, holds, books or
cancels for someone whose record they cannot see: each such answer is the answer for a
missing patient or appointment."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from fhir_server.portal.scheduling.table import load_table
from tests.integration.access.test_smart_enforcement import Server
from tests.integration.seeded import seeded_server

SOPHIA = "Patient/adolescent-sophia-carter"
LIAM = "Patient/child-liam-carter"
TABLE = load_table()
SYSTEM = TABLE.system
USER = "openid fhirUser user/*.cruds"
SLOT = "Slot/slot-rachel-wd06-1400"
PARENTS = ("sponsor", "spouse")
STRANGERS = ("adult-dependent-no-grant", "basic-user")


@dataclass
class Env:
    s: Server
    tokens: dict[str, str]
    teen_visit: str

    async def get(self, who: str, url: str, **params: str) -> httpx.Response:
        return await self.s.get(self.tokens[who], url, **params)

    async def post(self, who: str, url: str, body: Any) -> httpx.Response:
        return await self.s.post(self.tokens[who], url, body)


@pytest.fixture(scope="module")
async def env(mongo_uri: str) -> AsyncIterator[Env]:
    async with seeded_server(mongo_uri) as (_, http):
        s = Server(http)
        tokens = {
            role: await s.token(role, USER)
            for role in ("sponsor", "spouse", "adult-dependent-no-grant", "basic-user")
        }
        tokens["nurse"] = await s.token("rn.jessica.moore", USER)
        # The clinic books Sophia's confidential visit (she asked for it in clinic).
        r = await s.post(
            tokens["nurse"],
            "Appointment/$book",
            {
                "resourceType": "Appointment",
                "status": "proposed",
                "serviceType": [
                    {"coding": [{"system": SYSTEM, "code": "adolescent-confidential"}]}
                ],
                "slot": [{"reference": SLOT}],
                "participant": [{"actor": {"reference": SOPHIA}, "status": "needs-action"}],
            },
        )
        assert r.status_code in (200, 201), r.text
        booked = r.json()
        codes = {s["code"] for s in booked["meta"]["security"]}
        assert (
            set(TABLE.clinics[0].visit_type("adolescent-confidential").confidential_labels) <= codes
        )  # type: ignore[union-attr]
        yield Env(s, tokens, f"Appointment/{booked['id']}")


def _ids(r: httpx.Response) -> set[str]:
    assert r.status_code == 200, r.text
    return {
        f"{e['resource']['resourceType']}/{e['resource'].get('id')}"
        for e in r.json().get("entry", [])
    }


@pytest.mark.parametrize("who", PARENTS)
async def test_parents_never_learn_of_the_confidential_visit(env: Env, who: str) -> None:
    visit = env.teen_visit
    rid = visit.split("/")[1]
    missing = await env.get(who, "Appointment/no-such-appointment")
    hidden = await env.get(who, visit)
    assert (
        (hidden.status_code, hidden.json()["issue"][0]["code"])
        == (
            missing.status_code,
            missing.json()["issue"][0]["code"],
        )
        == (404, "not-found")
    )
    # The same words as for a missing one (the id asked for is echoed, nothing else).
    assert hidden.text.replace(rid, "X") == missing.text.replace("no-such-appointment", "X")
    # Searches and counts: the teen's other (unlabelled) appointments show, this one not.
    seen = _ids(await env.get(who, "Appointment", patient=SOPHIA))
    assert visit not in seen and seen, "the parent still sees Sophia's ordinary appointments"
    plain = await env.get(who, "Appointment", patient=SOPHIA, _summary="count")
    assert plain.json()["total"] == len(seen)
    assert visit not in _ids(await env.get(who, "Appointment", slot=SLOT))
    assert visit not in _ids(
        await env.get(who, "Slot", _id=SLOT.split("/")[1], _revinclude="Appointment:slot")
    )
    # The Slot is directory data: busy, naming nobody.
    slot = await env.get(who, SLOT)
    assert (
        slot.json()["status"] == "busy"
        and "Appointment" not in slot.text
        and "sophia" not in slot.text
    )
    # No Task about it (request or clipboard) reaches the parent.
    assert not any(visit in t for t in _ids(await env.get(who, "Task", focus=visit)))
    # Acting on it answers as for a missing appointment.
    other = {
        "resourceType": "Appointment",
        "status": "proposed",
        "serviceType": [{"coding": [{"system": SYSTEM, "code": "wellness"}]}],
        "slot": [{"reference": "Slot/slot-rachel-wd08-1400"}],
        "participant": [{"actor": {"reference": SOPHIA}, "status": "needs-action"}],
    }
    params = {
        "resourceType": "Parameters",
        "parameter": [{"name": "appointment", "resource": other}],
    }
    empty = {"resourceType": "Parameters", "parameter": []}
    for op, body in (("$cancel", empty), ("$reschedule", params)):
        r = await env.post(who, f"{visit}/{op}", body)
        gone = await env.post(who, f"Appointment/no-such-appointment/{op}", body)
        assert r.status_code == gone.status_code == 404, r.text
        assert r.text.replace(rid, "X") == gone.text.replace("no-such-appointment", "X")
    # Booking over it says the Slot is taken, never by whom.
    r = await env.post(
        who,
        "Appointment/$book",
        {
            "resourceType": "Appointment",
            "status": "proposed",
            "serviceType": [{"coding": [{"system": SYSTEM, "code": "wellness"}]}],
            "slot": [{"reference": SLOT}],
            "participant": [{"actor": {"reference": LIAM}, "status": "needs-action"}],
        },
    )
    assert r.status_code in (409, 422), r.text
    assert rid not in r.text and "sophia" not in r.text.lower()
    # A parent may not book a confidential visit type for the adolescent at all.
    r = await env.get(
        who,
        "Appointment/$find",
        patient=SOPHIA,
        **{"service-type": f"{SYSTEM}|adolescent-confidential"},
    )
    assert r.status_code == 200 and r.json()["total"] == 0


@pytest.mark.parametrize("who", STRANGERS)
async def test_no_patient_books_for_a_record_they_cannot_see(env: Env, who: str) -> None:
    missing = await env.get(who, "Appointment/$find", patient="Patient/no-such-patient")
    r = await env.get(who, "Appointment/$find", patient=LIAM)
    assert r.status_code == missing.status_code == 404, r.text
    assert r.json()["issue"][0]["diagnostics"].replace(LIAM, "X") == missing.json()["issue"][0][
        "diagnostics"
    ].replace("Patient/no-such-patient", "X")
    r = await env.post(
        who,
        "Appointment/$book",
        {
            "resourceType": "Appointment",
            "status": "proposed",
            "serviceType": [{"coding": [{"system": SYSTEM, "code": "wellness"}]}],
            "slot": [{"reference": "Slot/slot-rachel-wd07-0900"}],
            "participant": [{"actor": {"reference": LIAM}, "status": "needs-action"}],
        },
    )
    assert r.status_code in (403, 404), r.text
    r = await env.post(
        who, f"{env.teen_visit}/$cancel", {"resourceType": "Parameters", "parameter": []}
    )
    assert r.status_code in (403, 404), r.text
    assert "sophia" not in r.text.lower()
