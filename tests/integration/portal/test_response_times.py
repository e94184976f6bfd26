"""Response-time Tasks and idempotent creates through the whole app, without tokens.

A server without tokens stores a message's `sent` as given (the portal's thread rules set it
from the server's clock only for user tokens), so the due dates here cross a chosen weekend
and holiday: a message sent the day before Thanksgiving 2026 is due at close of business on
Tuesday 1 December. tests/integration/portal/test_response_times_seeded.py runs the same
flow with real tokens on the seed population.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import httpx

from tests.conftest import FHIR_JSON
from tests.integration.search.test_explain import check_served

CODE = "https://mhs.example.org/fhir/CodeSystem/portal-task|respond-to-message"
TEAM = "CareTeam/rt-team"
PATIENT = "Patient/rt-patient"
CATEGORY = {
    "coding": [
        {"system": "https://mhs.example.org/fhir/CodeSystem/message-category", "code": "forms"}
    ]
}


def header(**extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Communication",
        "status": "in-progress",
        "category": [CATEGORY],
        "topic": {"text": "Travel letter"},
        "subject": {"reference": PATIENT},
        "recipient": [{"reference": TEAM}],
        **extra,
    }


def message(thread: str, text: str, sent: str, sender: str = PATIENT, **extra: Any) -> dict:
    return {
        "resourceType": "Communication",
        "status": "completed",
        "partOf": [{"reference": thread}],
        "subject": {"reference": PATIENT},
        "sender": {"reference": sender},
        "recipient": [{"reference": TEAM if sender == PATIENT else PATIENT}],
        "sent": sent,
        "payload": [{"contentString": text}],
        **extra,
    }


async def post(client: httpx.AsyncClient, body: dict, **headers: str) -> httpx.Response:
    return await client.post(body["resourceType"], json=body, headers={**FHIR_JSON, **headers})


async def tasks_of(client: httpx.AsyncClient, ref: str) -> list[dict[str, Any]]:
    r = await client.get("Task", params={"focus": ref})
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", [])]


async def test_task_due_across_a_weekend_and_a_holiday_completed_by_the_reply(
    client: httpx.AsyncClient,
) -> None:
    h = await post(client, header())
    assert h.status_code == 201, h.text
    thread = f"Communication/{h.json()['id']}"
    assert await tasks_of(client, thread) == []  # a header alone asks for nothing

    first = await post(client, message(thread, "Letter please", "2026-11-25T20:00:00Z"))
    assert first.status_code == 201, first.text
    m1 = f"Communication/{first.json()['id']}"
    [task] = await tasks_of(client, m1)
    assert task["status"] == "requested" and task["intent"] == "order"
    assert f"{task['code']['coding'][0]['system']}|{task['code']['coding'][0]['code']}" == CODE
    assert task["for"] == {"reference": PATIENT}
    assert task["owner"] == {"reference": TEAM}
    assert task["requester"] == {"reference": PATIENT}
    # Thu 26 Nov Thanksgiving, Fri 27 (1), weekend, Mon 30 (2), Tue 1 Dec (3): 17:00 EST.
    assert task["restriction"]["period"] == {
        "start": "2026-11-25T20:00:00.000Z",
        "end": "2026-12-01T22:00:00.000Z",
    }
    assert "executionPeriod" not in task

    # A second question before any answer has its own Task; a note between clinicians to a
    # Practitioner, and a patient's message to a person rather than a team, ask for none.
    second = await post(client, message(thread, "Also a copy", "2026-11-27T14:00:00Z"))
    m2 = f"Communication/{second.json()['id']}"
    [task2] = await tasks_of(client, m2)
    assert task2["restriction"]["period"]["end"] == "2026-12-02T22:00:00.000Z"
    direct = message(thread, "To the doctor", "2026-11-27T14:00:00Z")
    direct["recipient"] = [{"reference": "Practitioner/rt-doc"}]
    d = await post(client, direct)
    assert await tasks_of(client, f"Communication/{d.json()['id']}") == []

    reply = message(
        thread,
        "Attached",
        "2026-11-30T15:00:00Z",
        sender="Practitioner/rt-doc",
        inResponseTo=[{"reference": m1}],
    )
    r = await post(client, reply)
    assert r.status_code == 201, r.text
    for ref in (m1, m2):
        [done] = await tasks_of(client, ref)
        assert done["status"] == "completed", done
        assert done["executionPeriod"]["end"] == "2026-11-30T15:00:00.000Z"
        assert done["output"][0]["valueReference"] == {
            "reference": f"Communication/{r.json()['id']}"
        }
        assert done["meta"]["versionId"] == "2"
    # The reply itself, from a clinician, asks for nothing.
    assert await tasks_of(client, f"Communication/{r.json()['id']}") == []


async def test_overdue_is_a_search_served_by_an_index(client: httpx.AsyncClient) -> None:
    h = await post(client, header(recipient=[{"reference": "CareTeam/rt-pool"}]))
    thread = f"Communication/{h.json()['id']}"
    late = message(
        thread, "Late", "2026-11-25T20:00:00Z", recipient=[{"reference": "CareTeam/rt-pool"}]
    )
    fresh = message(
        thread,
        "Fresh",
        datetime.now(UTC).isoformat(),
        recipient=[{"reference": "CareTeam/rt-pool"}],
    )
    ids = [(await post(client, b)).json()["id"] for b in (late, fresh)]
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    params = [("owner", "CareTeam/rt-pool"), ("status", "requested"), ("due", f"lt{now}")]
    r = await client.get("Task", params=params)
    assert r.status_code == 200, r.text
    found = [e["resource"]["focus"]["reference"] for e in r.json().get("entry", [])]
    assert found == [f"Communication/{ids[0]}"]
    # The CapabilityStatement lists the custom parameter on Task.
    meta = (await client.get("metadata")).json()
    task = next(x for x in meta["rest"][0]["resource"] if x["type"] == "Task")
    assert "due" in {p["name"] for p in task.get("searchParam", [])}
    # Every query the search sends is served by an index (docs/search.md, "Indexes").
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    bounds = await check_served(ctx.store.db, ctx.registry, "overdue", "Task", params)
    assert "rt" not in bounds


async def test_idempotency_key_replays_and_refuses(client: httpx.AsyncClient) -> None:
    h = await post(client, header())
    thread = f"Communication/{h.json()['id']}"
    body = message(thread, "Once only", "2026-11-25T20:00:00Z")
    key = {"Idempotency-Key": '"rt-key-1"'}
    first = await post(client, body, **key)
    again = await post(client, body, **key)
    assert first.status_code == again.status_code == 201, again.text
    assert first.json()["id"] == again.json()["id"]
    assert again.headers["location"] == first.headers["location"]
    assert len(await tasks_of(client, f"Communication/{first.json()['id']}")) == 1
    # Same key, another request: 422, and nothing stored.
    other = await post(client, {**body, "payload": [{"contentString": "Changed"}]}, **key)
    assert other.status_code == 422, other.text
    assert other.json()["issue"][0]["code"] == "business-rule"
    r = await client.get("Communication", params={"part-of": thread, "_summary": "count"})
    assert r.json()["total"] == 1
    # Malformed keys, and keys where nothing would make the request idempotent: 400.
    for bad in ('"unterminated', "", "x" * 256, '"tab\there"'):
        r = await post(client, body, **{"Idempotency-Key": bad})
        assert r.status_code == 400, (bad, r.text)
    cid = first.json()["id"]
    patch = await client.patch(
        f"Communication/{cid}",
        json=[{"op": "add", "path": "/priority", "value": "urgent"}],
        headers={"Content-Type": "application/json-patch+json", **key},
    )
    assert patch.status_code == 400 and "create" in patch.text
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": []}
    r = await client.post("", json=bundle, headers={**FHIR_JSON, **key})
    assert r.status_code == 400 and "ifNoneExist" in r.text


async def test_parallel_conditional_creates_make_one(client: httpx.AsyncClient) -> None:
    ident = "https://rt.example/ids|parallel-1"
    system, value = ident.split("|")
    body = {
        "resourceType": "Patient",
        "identifier": [{"system": system, "value": value}],
        "name": [{"family": "Once"}],
    }
    answers = await asyncio.gather(
        *(post(client, body, **{"If-None-Exist": f"identifier={ident}"}) for _ in range(20))
    )
    assert sorted({a.status_code for a in answers}) == [200, 201] or {
        a.status_code for a in answers
    } == {201}, [a.text for a in answers if a.status_code >= 300]
    assert [a.status_code for a in answers].count(201) == 1
    assert len({a.json()["id"] for a in answers}) == 1
    r = await client.get("Patient", params={"identifier": ident, "_summary": "count"})
    assert r.json()["total"] == 1
    # Parameters in another order are the same condition, and a transaction's ifNoneExist
    # takes the same claim: still one.
    entry = {
        "resource": body,
        "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={ident}"},
    }
    bundles = await asyncio.gather(
        *(
            client.post(
                "",
                json={"resourceType": "Bundle", "type": "transaction", "entry": [entry]},
                headers=FHIR_JSON,
            )
            for _ in range(5)
        )
    )
    assert {b.status_code for b in bundles} == {200}, [b.text for b in bundles]
    r = await client.get("Patient", params={"identifier": ident, "_summary": "count"})
    assert r.json()["total"] == 1
    fresh = "https://rt.example/ids|parallel-2"
    entry2 = {
        "resource": {**body, "identifier": [{"system": system, "value": "parallel-2"}]},
        "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={fresh}"},
    }
    bundles = await asyncio.gather(
        *(
            client.post(
                "",
                json={"resourceType": "Bundle", "type": "transaction", "entry": [entry2]},
                headers=FHIR_JSON,
            )
            for _ in range(8)
        )
    )
    # Copies that lost the race are told to retry (412); none made a second Patient.
    assert {b.status_code for b in bundles} <= {200, 412}, [b.text for b in bundles]
    r = await client.get("Patient", params={"identifier": fresh, "_summary": "count"})
    assert r.json()["total"] == 1
    # One transaction creating twice by one condition is refused, and writes nothing.
    twice = {"resourceType": "Bundle", "type": "transaction", "entry": [entry2, entry2]}
    twice["entry"] = [
        {**e, "request": {**e["request"], "ifNoneExist": "identifier=https://rt.example/ids|x"}}
        for e in twice["entry"]
    ]
    r = await client.post("", json=twice, headers=FHIR_JSON)
    assert r.status_code == 400 and "same ifNoneExist" in r.text, r.text


async def test_an_expired_key_is_a_new_request(mongo_uri: str) -> None:
    from tests.conftest import make_settings, running_app

    async with running_app(make_settings(mongo_uri, idempotency_key_ttl_s=1)) as c:
        key = {"Idempotency-Key": "short-lived"}  # unquoted is accepted too
        body = {"resourceType": "Patient", "name": [{"family": "First"}]}
        first = await post(c, body, **key)
        assert (await post(c, {**body, "name": [{"family": "Other"}]}, **key)).status_code == 422
        await asyncio.sleep(1.2)
        later = await post(c, {**body, "name": [{"family": "Other"}]}, **key)
        assert later.status_code == 201, later.text
        assert later.json()["id"] != first.json()["id"]
