"""Secure messaging end to end with real SMART tokens from the login pages (docs/portal.md):
threads, sender and sent from the token, who may message whom (profiles/portal/
messaging.json), the pool inbox, unread searches, `$recipients` and `$mark-read`. Every
refused write is read back with the backend token to prove nothing was stored."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from joserfc.jwk import RSAKey

from seed_data.directory import CLINIC_NURSE_POOL, PEOPLE, care_team_id
from tests.integration.access.test_smart_enforcement import Server
from tests.integration.auth.conftest import BACKEND
from tests.integration.auth.test_backend_services import assertion, request_token
from tests.integration.seeded import seeded_server

USER = "openid fhirUser user/*.cruds"
FHIR_JSON = "application/fhir+json"
JAMES = f"Patient/{PEOPLE['james'].id}"
LIAM = f"Patient/{PEOPLE['liam'].id}"
SOPHIA = f"Patient/{PEOPLE['sophia'].id}"
POOL = f"CareTeam/{CLINIC_NURSE_POOL[PEOPLE['james'].clinic]}"
OTHER_POOL = f"CareTeam/{CLINIC_NURSE_POOL['internal-medicine']}"
TEAM = f"CareTeam/{care_team_id('james')}"
NURSE = "Practitioner/rn-jessica-moore"
CATEGORY = "https://mhs.example.org/fhir/CodeSystem/message-category"
ROLES = ("sponsor", "rn.jessica.moore", "dr.rachel.kim", "basic-user", "spouse")


@dataclass
class Env:
    app: FastAPI
    s: Server
    tokens: dict[str, str]

    async def send(self, who: str, method: str, url: str, body: Any = None, **h: str) -> Any:
        headers = {"Authorization": f"Bearer {self.tokens[who]}", "Content-Type": FHIR_JSON, **h}
        return await self.s.http.request(
            method,
            f"/fhir/{url}",
            headers=headers,
            content=orjson.dumps(body) if body is not None else b"",
        )

    async def get(self, who: str, url: str, **params: str) -> httpx.Response:
        return await self.s.get(self.tokens[who], url, **params)

    async def stored(self, text: str) -> list[dict[str, Any]]:
        """Communications holding the word `text` (read with the backend token)."""
        r = await self.get("backend", "Communication", _content=text, _count="100")
        assert r.status_code == 200, r.text
        return [e["resource"] for e in r.json().get("entry", [])]


@pytest.fixture(scope="module")
async def env(mongo_uri: str) -> AsyncIterator[Env]:
    async with seeded_server(mongo_uri) as (app, http):
        s = Server(http)
        key = RSAKey.import_key(BACKEND["jwk"])
        r = await request_token(s, assertion(key, BACKEND["client_id"], "RS384"))
        assert r.status_code == 200, r.text
        tokens = {"backend": r.json()["access_token"]}
        for role in ROLES:
            tokens[role] = await s.token(role, USER)
        yield Env(app, s, tokens)


def header(subject: str, recipient: str, topic: str) -> dict[str, Any]:
    return {
        "resourceType": "Communication",
        "status": "in-progress",
        "category": [{"coding": [{"system": CATEGORY, "code": "medical-question"}]}],
        "subject": {"reference": subject},
        "recipient": [{"reference": recipient}],
        "topic": {"text": topic},
    }


def message(thread: str, subject: str, text: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Communication",
        "status": "completed",
        "partOf": [{"reference": thread}],
        "subject": {"reference": subject},
        "payload": [{"contentString": text}],
        **extra,
    }


def issue(r: httpx.Response) -> dict[str, Any]:
    assert r.headers["content-type"].startswith(FHIR_JSON), r.headers
    return dict(r.json()["issue"][0])


def ids(bundle: dict[str, Any]) -> set[str]:
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle["entry"]}


async def test_sponsor_writes_to_the_pool_and_the_nurse_answers(env: Env) -> None:
    # A thread: the header, then the message; sender and sent are the server's.
    r = await env.send("sponsor", "POST", "Communication", header(JAMES, POOL, "Knee pain"))
    assert r.status_code == 201, r.text
    head = r.json()
    assert head["sender"] == {"reference": JAMES} and head["sent"]
    thread = f"Communication/{head['id']}"
    forged_time = message(thread, JAMES, "My knee hurts after runs.", sent="2001-01-01")
    r = await env.send("sponsor", "POST", "Communication", forged_time)
    assert r.status_code == 201, r.text
    first = r.json()
    assert first["recipient"] == [{"reference": POOL}]  # the thread's, when left out
    assert first["sender"] == {"reference": JAMES}
    assert not first["sent"].startswith("2001") and "received" not in first

    # The nurse's pool inbox: unread messages to the pool.
    r = await env.get(
        "rn.jessica.moore", "Communication", recipient=POOL, **{"received:missing": "true"}
    )
    assert r.status_code == 200, r.text
    assert f"Communication/{first['id']}" in ids(r.json())
    # She marks it read (once), and the sponsor sees it read.
    r = await env.send("rn.jessica.moore", "POST", f"Communication/{first['id']}/$mark-read")
    assert r.status_code == 200 and r.json()["received"], r.text
    done = r.json()
    r = await env.send("rn.jessica.moore", "POST", f"Communication/{first['id']}/$mark-read")
    assert r.status_code == 200 and r.json()["received"] == done["received"], r.text
    assert r.json()["meta"]["versionId"] == done["meta"]["versionId"]
    seen = (await env.get("sponsor", f"Communication/{first['id']}")).json()
    assert seen["received"] == done["received"]

    # She replies in the thread; left out, the recipient is the one she answers.
    reply = message(thread, JAMES, "Rest it this week; book a visit if it swells.")
    reply["inResponseTo"] = [{"reference": f"Communication/{first['id']}"}]
    r = await env.send("rn.jessica.moore", "POST", "Communication", reply)
    assert r.status_code == 201, r.text
    answer = r.json()
    assert answer["sender"] == {"reference": NURSE}
    assert answer["recipient"] == [{"reference": JAMES}]

    # The sponsor's unread search finds the reply; his threads and the thread's messages.
    unread = await env.get(
        "sponsor", "Communication", recipient=JAMES, **{"received:missing": "true"}
    )
    assert f"Communication/{answer['id']}" in ids(unread.json())
    threads = await env.get(
        "sponsor", "Communication", subject=JAMES, **{"part-of:missing": "true"}
    )
    assert thread in ids(threads.json())
    assert all("payload" not in e["resource"] for e in threads.json()["entry"])
    msgs = (
        await env.get("sponsor", "Communication", **{"part-of": thread, "_sort": "sent"})
    ).json()
    assert [e["resource"]["id"] for e in msgs["entry"]] == [first["id"], answer["id"]]

    # He marks the reply read with a PATCH of `received` (a recipient may; once).
    patch = [{"op": "add", "path": "/received", "value": "2026-01-01T10:00:00Z"}]
    jp = {"Content-Type": "application/json-patch+json"}
    r = await env.send("sponsor", "PATCH", f"Communication/{answer['id']}", patch, **jp)
    assert r.status_code == 200, r.text
    assert r.json()["received"] == "2026-01-01T10:00:00Z"
    again_patch = [{"op": "replace", "path": "/received", "value": "2026-02-01T10:00:00Z"}]
    r = await env.send("sponsor", "PATCH", f"Communication/{answer['id']}", again_patch, **jp)
    assert r.status_code == 422 and issue(r)["code"] == "business-rule", r.text
    # The sender is no recipient of what he wrote: 403, nothing changed.
    sender_patch = [{"op": "add", "path": "/received", "value": "2026-01-01T10:00:00Z"}]
    r = await env.send("sponsor", "PATCH", f"Communication/{head['id']}", sender_patch, **jp)
    assert r.status_code == 403 and issue(r)["code"] == "forbidden", r.text
    after = (await env.get("backend", f"Communication/{head['id']}")).json()
    assert "received" not in after and after["meta"]["versionId"] == head["meta"]["versionId"]
    r = await env.send("sponsor", "POST", f"Communication/{head['id']}/$mark-read")
    assert r.status_code == 403 and issue(r)["code"] == "forbidden", r.text
    r = await env.send("sponsor", "POST", "Communication/no-such-message/$mark-read")
    assert r.status_code == 404, r.text
    # The message's content is fixed once stored.
    edit = [{"op": "replace", "path": "/payload/0/contentString", "value": "edited"}]
    r = await env.send("sponsor", "PATCH", f"Communication/{first['id']}", edit, **jp)
    assert r.status_code == 422, r.text


async def test_refused_sends_store_nothing(env: Env) -> None:
    r = await env.send("sponsor", "POST", "Communication", header(JAMES, POOL, "Refusals"))
    assert r.status_code == 201, r.text
    thread = f"Communication/{r.json()['id']}"
    cases: list[tuple[str, dict[str, Any], int, str]] = [
        # A sender who is not the caller.
        ("sponsor", message(thread, JAMES, "zqforged", sender={"reference": NURSE}), 422, "sender"),
        # Unknown, foreign and merely visible but not allowed recipients.
        (
            "sponsor",
            message(thread, JAMES, "zqunknown", recipient=[{"reference": "CareTeam/nope"}]),
            422,
            "recipient",
        ),
        (
            "sponsor",
            message(thread, JAMES, "zqforeign", recipient=[{"reference": OTHER_POOL}]),
            422,
            "recipient",
        ),
        # A message outside any thread, and one in a thread that is not there.
        ("sponsor", {**message(thread, JAMES, "zqnothread"), "partOf": []}, 422, "payload"),
        (
            "sponsor",
            message("Communication/no-such-thread", JAMES, "zqnowhere"),
            422,
            "partOf",
        ),
        # A parent writing into the adolescent's thread: the write rules refuse it.
        ("sponsor", message("Communication/msg-sophia-followup", SOPHIA, "zqteen"), 403, ""),
        # Hiding the thread's patient does not help: that thread is not his.
        ("sponsor", message("Communication/msg-sophia-followup", JAMES, "zqteen2"), 422, "partOf"),
        # DS Logon Basic never writes.
        (
            "basic-user",
            message(thread, f"Patient/{PEOPLE['robert'].id}", "zqbasic"),
            403,
            "",
        ),
    ]
    for who, body, status, element in cases:
        r = await env.send(who, "POST", "Communication", body)
        assert r.status_code == status, (body["payload"], r.text)
        if element:
            assert issue(r)["code"] == "business-rule", r.text
            assert issue(r)["expression"][0].startswith(f"Communication.{element}"), r.text
        assert await env.stored(body["payload"][0]["contentString"]) == [], body
    basic = await env.send("basic-user", "POST", "Communication", header(JAMES, POOL, "x"))
    assert "DS Logon Basic" in issue(basic)["diagnostics"], basic.text
    # A header with a payload, with no category of the table, or to a stranger's team.
    bad_headers = [
        {**header(JAMES, POOL, "zqh1"), "payload": [{"contentString": "x"}]},
        {**header(JAMES, POOL, "zqh2"), "category": [{"text": "other"}]},
        header(JAMES, f"CareTeam/{care_team_id('samuel')}", "zqh3"),
    ]
    for body in bad_headers:
        r = await env.send("sponsor", "POST", "Communication", body)
        assert r.status_code == 422, r.text
        assert await env.stored(body["topic"]["text"]) == [], body


async def test_a_parent_writes_for_a_child_as_the_childs_related_person(env: Env) -> None:
    liam_team = f"CareTeam/{care_team_id('liam')}"
    r = await env.send("sponsor", "POST", "Communication", header(LIAM, liam_team, "Inhaler"))
    assert r.status_code == 201, r.text
    assert r.json()["sender"] == {"reference": "RelatedPerson/rp-james-for-liam"}
    thread = f"Communication/{r.json()['id']}"
    r = await env.send("sponsor", "POST", "Communication", message(thread, LIAM, "Refill please"))
    assert r.status_code == 201, r.text
    assert r.json()["sender"] == {"reference": "RelatedPerson/rp-james-for-liam"}
    first = r.json()["id"]
    # Dr. Kim answers the parent who wrote, in the child's thread.
    reply = message(
        thread,
        LIAM,
        "Sent to the pharmacy.",
        inResponseTo=[{"reference": f"Communication/{first}"}],
    )
    r = await env.send("dr.rachel.kim", "POST", "Communication", reply)
    assert r.status_code == 201, r.text
    assert r.json()["recipient"] == [{"reference": "RelatedPerson/rp-james-for-liam"}]
    # The other parent reads it; the father marks it read as the child's proxy.
    assert (await env.get("spouse", f"Communication/{r.json()['id']}")).status_code == 200
    r = await env.send("sponsor", "POST", f"Communication/{r.json()['id']}/$mark-read")
    assert r.status_code == 200 and r.json()["received"], r.text


async def test_recipients_lists_the_teams_and_pools_of_the_patient(env: Env) -> None:
    async def recipients(who: str, **params: str) -> httpx.Response:
        return await env.get(who, "Communication/$recipients", **params)

    found = await recipients("sponsor", patient=PEOPLE["james"].id)
    assert found.status_code == 200, found.text
    assert found.json()["type"] == "searchset"
    assert ids(found.json()) == {TEAM, POOL}
    # Name search: accents and case ignored, every word a word prefix; the clinic's name
    # finds its pool.
    for name in ("LAKESIDE mmc fámily médicine", "nurse pool", "famil med"):
        hit = await recipients("sponsor", patient=JAMES, name=name)
        assert POOL in ids(hit.json()), name
    none = await recipients("sponsor", patient=PEOPLE["james"].id, name="internal medicine")
    assert none.json()["total"] == 0
    # For a child: the child's team; for the adolescent, her parent gets none.
    liam = await recipients("sponsor", patient=PEOPLE["liam"].id)
    assert f"CareTeam/{care_team_id('liam')}" in ids(liam.json())
    teen = await recipients("sponsor", patient=PEOPLE["sophia"].id)
    assert teen.status_code == 200 and teen.json()["total"] == 0
    assert teen.json().get("entry", []) == []
    # A patient the caller cannot see answers as a missing one; no patient is a 400.
    hidden = await recipients("sponsor", patient=PEOPLE["samuel"].id)
    missing = await recipients("sponsor", patient="no-such-patient")
    assert hidden.status_code == missing.status_code == 404
    assert issue(hidden)["code"] == issue(missing)["code"]
    r = await recipients("sponsor")
    assert r.status_code == 400 and "patient" in issue(r)["diagnostics"], r.text
    # A clinician lists a patient's recipients too; Basic may not search messages at all.
    nurse = await recipients("rn.jessica.moore", patient=PEOPLE["james"].id)
    assert ids(nurse.json()) == {TEAM, POOL}
    basic = await recipients("basic-user", patient=PEOPLE["robert"].id)
    assert basic.status_code == 403, basic.text
    # Listed in the CapabilityStatement, with their definitions served.
    cs = (await env.s.http.get("/fhir/metadata")).json()
    [comm] = [r for r in cs["rest"][0]["resource"] if r["type"] == "Communication"]
    names = {o["name"] for o in comm.get("operation", [])}
    assert {"recipients", "mark-read"} <= names, names


async def test_a_thread_in_one_transaction_is_all_or_nothing(env: Env) -> None:
    def bundle(text: str, recipient: str) -> dict[str, Any]:
        return {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "fullUrl": "urn:uuid:0f8c2f3e-1d5b-4c2a-9d0e-000000000001",
                    "resource": header(JAMES, POOL, text),
                    "request": {"method": "POST", "url": "Communication"},
                },
                {
                    "resource": message(
                        "urn:uuid:0f8c2f3e-1d5b-4c2a-9d0e-000000000001",
                        JAMES,
                        text,
                        recipient=[{"reference": recipient}],
                    ),
                    "request": {"method": "POST", "url": "Communication"},
                },
            ],
        }

    r = await env.send("sponsor", "POST", "", bundle("zqtxok", POOL))
    assert r.status_code == 200, r.text
    [stored] = [m for m in await env.stored("zqtxok") if "partOf" in m]
    assert stored["partOf"][0]["reference"].startswith("Communication/")
    assert stored["sender"] == {"reference": JAMES}
    r = await env.send("sponsor", "POST", "", bundle("zqtxbad", OTHER_POOL))
    assert r.status_code == 422, r.text
    assert await env.stored("zqtxbad") == []


async def test_a_participant_closes_a_thread(env: Env) -> None:
    r = await env.send("sponsor", "POST", "Communication", header(JAMES, POOL, "Closing"))
    assert r.status_code == 201, r.text
    head = r.json()
    ref = f"Communication/{head['id']}"
    r = await env.send("sponsor", "POST", "Communication", message(ref, JAMES, "zqbefore"))
    assert r.status_code == 201, r.text
    mine = r.json()
    # The nurse (a member of the pool it was sent to) closes the thread he started.
    r = await env.send("rn.jessica.moore", "PUT", ref, {**head, "status": "completed"})
    assert r.status_code == 200, r.text
    r = await env.send("sponsor", "POST", "Communication", message(ref, JAMES, "zqclosed"))
    assert r.status_code == 422 and issue(r)["expression"] == ["Communication.partOf"], r.text
    assert await env.stored("zqclosed") == []
    # A status outside the table's, or a message's status changed by someone else: refused.
    closed = (await env.get("sponsor", ref)).json()
    r = await env.send("sponsor", "PUT", ref, {**closed, "status": "entered-in-error"})
    assert r.status_code == 422, r.text
    r = await env.send(
        "rn.jessica.moore", "PUT", f"Communication/{mine['id']}", {**mine, "status": "stopped"}
    )
    assert r.status_code == 403, r.text
    # He reopens it.
    r = await env.send("sponsor", "PUT", ref, {**closed, "status": "in-progress"})
    assert r.status_code == 200, r.text
