"""Response-time Tasks and idempotent sends with real SMART tokens on the seed population.

The sponsor (DS Logon Premium, the public app) writes to his care team; the Family Medicine
nurse answers; the Tasks are read with the backend service's `system/*.rs` token, and the
sponsor reads his own (Task is in the patient compartment through `for`: docs/access.md,
"Added compartments"). The server sets `sent` for user tokens, so the due date
is checked against an independent count over OPM's published holidays
(tests/unit/portal/test_calendar.py). Twenty parallel copies of one send with one
`Idempotency-Key` (and twenty with one `If-None-Exist`) make one message and one Task.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from joserfc.jwk import RSAKey

from seed_data.population import build_population
from seed_data.response_tasks import build as seed_tasks
from tests.integration.access.test_smart_enforcement import Server
from tests.integration.auth.conftest import BACKEND, BASE, CONFIDENTIAL, authorize, exchange
from tests.integration.auth.test_backend_services import assertion, request_token
from tests.integration.seeded import seeded_server
from tests.unit.portal.test_calendar import reference_due

SPONSOR = "Patient/sponsor-james-carter"
TEAM = "CareTeam/careteam-james-carter"
CODE = "https://mhs.example.org/fhir/CodeSystem/portal-task|respond-to-message"
CATEGORY = {
    "coding": [
        {
            "system": "https://mhs.example.org/fhir/CodeSystem/message-category",
            "code": "medical-question",
        }
    ]
}
USER = "openid fhirUser user/*.cruds"
CLINIC = ZoneInfo("America/New_York")


@dataclass
class Env:
    server: Server
    sponsor: str
    sponsor_other_app: str
    nurse: str
    backend: str

    async def post(self, token: str, body: dict, **headers: str) -> httpx.Response:
        return await self.server.http.post(
            f"/fhir/{body['resourceType']}",
            json=body,
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/fhir+json",
                **headers,
            },
        )

    async def search(self, rt: str, **params: str) -> list[dict[str, Any]]:
        r = await self.server.get(self.backend, rt, **params)
        assert r.status_code == 200, r.text
        return [e["resource"] for e in r.json().get("entry", [])]


async def confidential_token(server: Server, role: str, scope: str) -> str:
    async with httpx.AsyncClient(transport=server.http._transport, base_url=BASE) as browser:
        auth = await authorize(browser, role, scope, client=CONFIDENTIAL)
        r = await exchange(browser, auth, client=CONFIDENTIAL)
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])


@pytest.fixture(scope="module")
async def env(mongo_uri: str) -> AsyncIterator[Env]:
    async with seeded_server(mongo_uri) as (_, http):
        server = Server(http)
        key = RSAKey.import_key(BACKEND["jwk"])
        r = await request_token(server, assertion(key, BACKEND["client_id"], "RS384"))
        assert r.status_code == 200, r.text
        yield Env(
            server,
            sponsor=await server.token("sponsor", USER),
            sponsor_other_app=await confidential_token(server, "sponsor", USER),
            nurse=await server.token("rn.jessica.moore", USER),
            backend=r.json()["access_token"],
        )


def header() -> dict[str, Any]:
    return {
        "resourceType": "Communication",
        "status": "in-progress",
        "category": [CATEGORY],
        "topic": {"text": "Knee pain after the run"},
        "subject": {"reference": SPONSOR},
        "recipient": [{"reference": TEAM}],
    }


def message(thread: str, text: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Communication",
        "status": "completed",
        "partOf": [{"reference": thread}],
        "subject": {"reference": SPONSOR},
        "recipient": [{"reference": TEAM}],
        "payload": [{"contentString": text}],
        **extra,
    }


async def new_thread(env: Env) -> str:
    h = await env.post(env.sponsor, header())
    assert h.status_code == 201, h.text
    return f"Communication/{h.json()['id']}"


async def test_patient_message_task_then_nurse_reply_completes_it(env: Env) -> None:
    thread = await new_thread(env)
    assert await env.search("Task", focus=thread) == []
    sent = await env.post(env.sponsor, message(thread, "It hurts when I climb stairs."))
    assert sent.status_code == 201, sent.text
    msg = sent.json()
    [task] = await env.search("Task", focus=f"Communication/{msg['id']}")
    assert task["status"] == "requested"
    assert task["for"] == {"reference": SPONSOR} and task["owner"] == {"reference": TEAM}
    assert task["requester"] == msg["sender"]
    # Counted from `sent`, which the server sets for a user token (from the write's time
    # before the thread rules set it).
    start = task["restriction"]["period"]["start"]
    if "sent" in msg:
        assert datetime.fromisoformat(start) == datetime.fromisoformat(msg["sent"])
    due = datetime.fromisoformat(task["restriction"]["period"]["end"])
    assert due.astimezone(CLINIC).date() == reference_due(datetime.fromisoformat(start), 3)
    assert (due.astimezone(CLINIC).hour, due.minute) == (17, 0)
    # The patient sees the Task his message made, by read and by search.
    own = await env.server.get(env.sponsor, f"Task/{task['id']}")
    assert own.status_code == 200 and own.json()["focus"] == task["focus"], own.text
    mine = await env.server.get(env.sponsor, "Task", focus=f"Communication/{msg['id']}")
    assert mine.status_code == 200, mine.text
    assert [e["resource"]["id"] for e in mine.json()["entry"]] == [task["id"]]

    reply = message(
        thread,
        "Rest it for a week; book a visit if it persists.",
        inResponseTo=[{"reference": f"Communication/{msg['id']}"}],
        recipient=[{"reference": SPONSOR}],
    )
    r = await env.post(env.nurse, reply)
    assert r.status_code == 201, r.text
    [done] = await env.search("Task", focus=f"Communication/{msg['id']}")
    assert done["status"] == "completed"
    assert done["executionPeriod"]["end"]
    assert done["output"][0]["valueReference"] == {"reference": f"Communication/{r.json()['id']}"}


async def test_the_seeds_overdue_message_is_found_by_the_overdue_search(env: Env) -> None:
    now = datetime.now(UTC)
    expected = {
        t["id"]
        for t in seed_tasks(build_population(date.today()))
        if t["status"] == "requested"
        and datetime.fromisoformat(t["restriction"]["period"]["end"]) < now
    }
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    found = await env.search("Task", code=CODE, status="requested", due=f"lt{stamp}", _count="100")
    # The seed's one overdue message: unanswered and unread in the nurse pool's inbox.
    assert expected == {"task-respond-msg-karen-travel-1"}, expected
    assert {t["id"] for t in found} >= expected
    for t in found:
        if t["id"] not in expected:
            continue
        owner = t["owner"]["reference"]
        per_owner = await env.search("Task", owner=owner, status="requested", due=f"lt{stamp}")
        assert t["id"] in {x["id"] for x in per_owner}


async def test_twenty_parallel_sends_with_one_key_make_one_message_and_one_task(env: Env) -> None:
    thread = await new_thread(env)
    body = message(thread, "Sent from a train with a bad connection.")
    key = {"Idempotency-Key": '"9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d"'}
    answers = await asyncio.gather(*(env.post(env.sponsor, body, **key) for _ in range(20)))
    assert {a.status_code for a in answers} == {201}, [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    messages = await env.search("Communication", **{"part-of": thread})
    assert [m["id"] for m in messages] == [answers[0].json()["id"]]
    assert len(await env.search("Task", focus=f"Communication/{messages[0]['id']}")) == 1
    # The key is the caller's: the same key from another app of the same user is another
    # request, and the same key with another body from the first app is refused.
    other = await env.post(env.sponsor_other_app, message(thread, "Another app"), **key)
    assert other.status_code == 201, other.text
    assert other.json()["id"] != answers[0].json()["id"]
    changed = await env.post(env.sponsor, message(thread, "Edited"), **key)
    assert changed.status_code == 422, changed.text


async def test_twenty_parallel_conditional_sends_make_one(env: Env) -> None:
    thread = await new_thread(env)
    ident = {
        "system": "urn:ietf:rfc:3986",
        "value": "urn:uuid:5b0c6c0e-7c55-4a55-9d5f-2f6f1d1c1a01",
    }
    body = message(thread, "Conditional copy", identifier=[ident])
    cond = {"If-None-Exist": f"identifier={ident['system']}|{ident['value']}"}
    answers = await asyncio.gather(*(env.post(env.sponsor, body, **cond) for _ in range(20)))
    codes = [a.status_code for a in answers]
    assert codes.count(201) == 1 and set(codes) <= {200, 201}, [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    messages = await env.search("Communication", **{"part-of": thread})
    assert len(messages) == 1
    assert len(await env.search("Task", focus=f"Communication/{messages[0]['id']}")) == 1
