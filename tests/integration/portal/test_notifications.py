"""Notifications end to end (issue 12 item 7): real tokens from the login pages, a real
rest-hook receiver and a real SMTP server (aiosmtpd) on free ports, the seeded server.

The sponsor subscribes (id-only rest-hook); a clinician's message to him reaches the
receiver exactly once with no resource content, and the SMTP server gets exactly one mail
with no health information; a dead endpoint gets it once it is back; the Subscription
rules refuse what is not the caller's own, storing nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fhir_server.notify import backport
from fhir_server.notify.table import load_table
from seed_data.directory import PEOPLE
from tests.integration.access.test_smart_enforcement import Server
from tests.integration.portal.receivers import Hook, Mailbox, status_of, until
from tests.integration.seeded import seeded_server

ROOT = Path(__file__).resolve().parents[3]
USER = "openid fhirUser user/*.cruds"
TABLE = load_table()
PATIENT_TOPIC, POOL_TOPIC = (t.url for t in TABLE.topics[:2])  # the messaging topics
JAMES = f"Patient/{PEOPLE['james'].id}"
JAMES_EMAIL = "james.carter@example.org"
POOL = "CareTeam/careteam-fm-nurse-pool"
# Words of the message and its context that must never reach an endpoint or an inbox.
CATEGORY = json.loads((ROOT / "profiles/portal/messaging.json").read_text())["categories"]["system"]
SECRET_TEXT = "Your potassium is 6.1, stop the lisinopril"
HEALTH_WORDS = ("potassium", "lisinopril", "Kim", "Rachel", "Family Medicine", "Lakeside")


def subscription(
    topic: str, endpoint: str, *, filt: str | None = None, payload: str = "id-only", **extra: Any
) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Subscription",
        "meta": {"profile": [backport.PROFILE]},
        "status": "requested",
        "reason": "portal notifications",
        "criteria": topic,
        "channel": {
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": backport.PAYLOAD_CONTENT, "valueCode": payload}]},
        },
        **extra,
    }
    if filt is not None:
        res["_criteria"] = {"extension": [{"url": backport.FILTER, "valueString": filt}]}
    return res


def message(
    recipient: str, subject: str = JAMES, text: str = SECRET_TEXT, thread: str | None = None
) -> dict[str, Any]:
    """A message (in `thread`, a header's reference) or, with no thread, a bare
    Communication as a system writer or a token-less test server may write it."""
    res: dict[str, Any] = {
        "resourceType": "Communication",
        "status": "completed",
        "subject": {"reference": subject},
        "recipient": [{"reference": recipient}],
        "payload": [{"contentString": text}],
    }
    if thread is not None:
        res["partOf"] = [{"reference": thread}]
    return res


def header(subject: str, recipient: str) -> dict[str, Any]:
    """A thread header (the messaging table's shape): no payload, so it notifies nobody."""
    return {
        "resourceType": "Communication",
        "status": "in-progress",
        "category": [{"coding": [{"system": CATEGORY, "code": "medical-question"}]}],
        "subject": {"reference": subject},
        "recipient": [{"reference": recipient}],
        "topic": {"text": "Follow-up"},
    }


@dataclass
class Env:
    server: Server
    app: Any
    mail: Mailbox
    tokens: dict[str, str]

    async def post(self, who: str, url: str, body: dict[str, Any]) -> Any:
        return await self.server.post(self.tokens[who], url, body)

    async def get(self, who: str, url: str, **params: str) -> Any:
        return await self.server.get(self.tokens[who], url, **params)

    async def delete(self, who: str, url: str) -> Any:
        return await self.server.http.delete(
            f"/fhir/{url}", headers={"Authorization": f"Bearer {self.tokens[who]}"}
        )

    async def queue(self, **filt: Any) -> list[dict[str, Any]]:
        db = self.app.state.ctx.store.db
        return await db.notifications.find(filt).to_list(None)

    async def thread(self, who: str, subject: str, recipient: str) -> str:
        r = await self.post(who, "Communication", header(subject, recipient))
        assert r.status_code == 201, r.text
        return f"Communication/{r.json()['id']}"

    async def subscriptions(self) -> int:
        return int(await self.app.state.ctx.store.db.subscriptions.count_documents({}))


@pytest.fixture(scope="module")
async def env(mongo_uri: str) -> AsyncIterator[Env]:
    mail = Mailbox().start()
    try:
        async with seeded_server(mongo_uri, smtp_url=mail.url) as (app, http):
            server = Server(http)
            tokens = {
                who: await server.token(who, USER)
                for who in (
                    "sponsor",
                    "dr.rachel.kim",
                    "rn.jessica.moore",
                    "adult-dependent-granted",
                )
            }
            yield Env(server, app, mail, tokens)
    finally:
        mail.stop()


async def subscribe(env: Env, who: str, body: dict[str, Any], hook: Hook) -> str:
    r = await env.post(who, "Subscription", body)
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "requested"
    sid = str(r.json()["id"])
    await until(lambda: hook.of_type("handshake"), what="the handshake")
    for _ in range(100):
        if (await env.get(who, f"Subscription/{sid}")).json()["status"] == "active":
            return sid
        await asyncio.sleep(0.05)
    raise AssertionError("the subscription never became active")


async def test_sponsor_hears_of_a_clinicians_message_once_without_content(env: Env) -> None:
    hook = Hook().start()
    try:
        filt = f"Communication?recipient={JAMES}"
        sid = await subscribe(
            env, "sponsor", subscription(PATIENT_TOPIC, hook.url, filt=filt), hook
        )
        thread = await env.thread("dr.rachel.kim", JAMES, JAMES)  # a header: no notification
        sent = await env.post("dr.rachel.kim", "Communication", message(JAMES, thread=thread))
        assert sent.status_code == 201, sent.text
        mid = sent.json()["id"]
        events = await until(lambda: hook.of_type("event-notification"), what="the event")
        mails = await until(lambda: env.mail.to(JAMES_EMAIL), what="the email")
        await asyncio.sleep(1.0)  # anything extra would have come by now
        assert len(hook.of_type("event-notification")) == 1
        assert len(env.mail.to(JAMES_EMAIL)) == 1
        bundle = events[0]
        assert bundle["type"] == "history"
        status = status_of(bundle)
        assert status["topic"]["valueCanonical"] == PATIENT_TOPIC
        assert status["subscription"]["valueReference"]["reference"].endswith(f"Subscription/{sid}")
        assert status["events-since-subscription-start"]["valueString"] == "1"
        focus = {p["name"]: p for p in status["notification-event"]["part"]}["focus"]
        assert focus["valueReference"]["reference"].endswith(f"Communication/{mid}")
        # id-only: the focus by URL, never its content.
        assert [e.get("resource") for e in bundle["entry"][1:]] == [None]
        assert bundle["entry"][1]["fullUrl"].endswith(f"Communication/{mid}")
        raw = b"".join(hook.raw).decode()
        assert "potassium" not in raw and "contentString" not in raw
        mail = mails[0]
        text = mail.get_payload(decode=True).decode()
        assert mail["Subject"] == TABLE.email.subject
        assert "/portal/" in text
        for word in HEALTH_WORDS:
            assert word not in text and word not in str(mail["Subject"]), word
        # $status reports the count; the CapabilityStatement advertises both topics.
        r = await env.get("sponsor", f"Subscription/{sid}/$status")
        assert r.status_code == 200, r.text
        params = status_of({"entry": [r.json()["entry"][0]]})
        assert params["type"]["valueCode"] == "query-status"
        assert params["events-since-subscription-start"]["valueString"] == "1"
        cap = (await env.get("sponsor", "metadata")).json()
        sub_entry = next(x for x in cap["rest"][0]["resource"] if x["type"] == "Subscription")
        advertised = {e["valueCanonical"] for e in sub_entry["extension"]}
        assert advertised == {t.url for t in TABLE.topics} >= {PATIENT_TOPIC, POOL_TOPIC}
        # $status comes from the operation table, with its generated definition.
        (op,) = [o for o in sub_entry["operation"] if o["name"] == "status"]
        r = await env.get("sponsor", "OperationDefinition/Subscription-status")
        assert r.status_code == 200, r.text
        assert r.json()["base"] == backport.STATUS_OPERATION
        assert op["definition"] == backport.STATUS_OPERATION
        assert (await env.delete("sponsor", f"Subscription/{sid}")).status_code == 204
        assert (await env.get("sponsor", f"Subscription/{sid}")).status_code == 404
    finally:
        hook.stop()


async def test_dead_endpoint_gets_it_once_when_back(env: Env) -> None:
    hook = Hook()  # not listening yet: connections refused
    r = await env.post("sponsor", "Subscription", subscription(PATIENT_TOPIC, hook.url))
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    failed: list[Any] = []
    for _ in range(200):
        failed = await env.queue(sub=sid, attempts={"$gte": 1}, state="pending")
        if failed:
            break
        await asyncio.sleep(0.05)
    assert failed and failed[0]["type"] == "handshake", "the handshake was not retried"
    assert "potassium" not in str(failed[0].get("error"))
    hook.start()
    try:
        await until(lambda: hook.of_type("handshake"), what="the retried handshake")
        # Active now; a message while the endpoint is down again is kept and retried.
        for _ in range(100):
            if (await env.get("sponsor", f"Subscription/{sid}")).json()["status"] == "active":
                break
            await asyncio.sleep(0.05)
        hook.stop()
        thread = await env.thread("dr.rachel.kim", JAMES, JAMES)
        sent = await env.post("dr.rachel.kim", "Communication", message(JAMES, thread=thread))
        assert sent.status_code == 201, sent.text
        for _ in range(200):
            if await env.queue(sub=sid, type="event-notification", attempts={"$gte": 1}):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the event was not tried while the endpoint was down")
        hook.start()
        await until(lambda: hook.of_type("event-notification"), what="the retried event")
        await asyncio.sleep(1.0)
        assert len(hook.of_type("handshake")) == 1
        assert len(hook.of_type("event-notification")) == 1
        done = await env.queue(sub=sid, type="event-notification")
        assert [d["state"] for d in done] == ["done"]
    finally:
        hook.stop()
        await env.delete("sponsor", f"Subscription/{sid}")


async def test_nurse_hears_of_a_message_to_her_pool_empty_payload_and_heartbeat(env: Env) -> None:
    hook = Hook().start()
    try:
        body = subscription(POOL_TOPIC, hook.url, payload="empty")
        body["channel"]["extension"] = [{"url": backport.HEARTBEAT, "valueUnsignedInt": 60}]
        sid = await subscribe(env, "rn.jessica.moore", body, hook)
        r = await env.get("rn.jessica.moore", f"Subscription/{sid}")
        assert r.json()["criteria"] == POOL_TOPIC
        thread = await env.thread("sponsor", JAMES, POOL)
        sent = await env.post("sponsor", "Communication", message(POOL, thread=thread))
        assert sent.status_code == 201, sent.text
        events = await until(lambda: hook.of_type("event-notification"), what="the pool event")
        await asyncio.sleep(0.5)
        assert len(events) == 1
        # empty: the status only, no focus, not even its id
        assert len(events[0]["entry"]) == 1
        parts = status_of(events[0])["notification-event"]["part"]
        assert {p["name"] for p in parts} == {"event-number", "timestamp"}
        assert sent.json()["id"] not in "".join(x.decode() for x in hook.raw)
        # The heartbeat falls due (as if 60 s passed with no traffic): one is sent.
        db = env.app.state.ctx.store.db
        await db.subscriptions.update_one(
            {"_id": sid}, {"$set": {"next_heartbeat": datetime.now(UTC) - timedelta(seconds=1)}}
        )
        beats = await until(lambda: hook.of_type("heartbeat"), what="the heartbeat")
        assert status_of(beats[0])["status"]["valueCode"] == "active"
        await asyncio.sleep(TABLE.delivery.heartbeat_scan_s + 0.5)
        assert len(hook.of_type("heartbeat")) == 1
    finally:
        hook.stop()


async def test_subscriptions_are_the_callers_own_only(env: Env) -> None:
    url = "http://127.0.0.1:9/hook"
    before = await env.subscriptions()
    cases = [
        # another patient's filter
        (
            "sponsor",
            subscription(
                PATIENT_TOPIC, url, filt=f"Communication?recipient=Patient/{PEOPLE['maria'].id}"
            ),
            403,
            "forbidden",
        ),
        # a patient on the pool topic, a clinician on the patient topic
        ("sponsor", subscription(POOL_TOPIC, url), 403, "forbidden"),
        ("dr.rachel.kim", subscription(PATIENT_TOPIC, url), 403, "forbidden"),
        # a pool the nurse is not in
        (
            "rn.jessica.moore",
            subscription(
                POOL_TOPIC, url, filt="Communication?recipient=CareTeam/careteam-im-nurse-pool"
            ),
            403,
            "forbidden",
        ),
        # full resources to an endpoint: never
        (
            "sponsor",
            subscription(PATIENT_TOPIC, url, payload="full-resource"),
            422,
            "business-rule",
        ),
        (
            "sponsor",
            subscription("http://example.org/SubscriptionTopic/other", url),
            422,
            "business-rule",
        ),
        ("sponsor", subscription(PATIENT_TOPIC, "ftp://example.org/x"), 422, "business-rule"),
        (
            "sponsor",
            subscription(PATIENT_TOPIC, url, filt="Observation?patient=x"),
            422,
            "business-rule",
        ),
    ]
    for who, body, status, code in cases:
        r = await env.post(who, "Subscription", body)
        assert r.status_code == status, (who, r.text)
        assert r.json()["issue"][0]["code"] == code, r.text
    assert await env.subscriptions() == before, "a refused Subscription was stored"
    # One of Daniel's own: the sponsor cannot read, find, check or delete it.
    r = await env.post("adult-dependent-granted", "Subscription", subscription(PATIENT_TOPIC, url))
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    for path in (f"Subscription/{sid}", f"Subscription/{sid}/$status"):
        hidden = await env.get("sponsor", path)
        missing = await env.get("sponsor", path.replace(sid, "no-such-id"))
        assert hidden.status_code == missing.status_code == 404
        assert hidden.json()["issue"][0]["code"] == missing.json()["issue"][0]["code"]
    assert (await env.delete("sponsor", f"Subscription/{sid}")).status_code == 404
    listed = (await env.get("sponsor", "Subscription")).json()
    assert sid not in {e["resource"]["id"] for e in listed.get("entry", [])}
    assert (await env.get("adult-dependent-granted", f"Subscription/{sid}")).status_code == 200
    put = await env.server.http.put(
        f"/fhir/Subscription/{sid}",
        json=r.json(),
        headers={"Authorization": f"Bearer {env.tokens['adult-dependent-granted']}"},
    )
    assert put.status_code == 405
    assert (await env.delete("adult-dependent-granted", f"Subscription/{sid}")).status_code == 204


async def test_a_rolled_back_message_queues_nothing(env: Env) -> None:
    before = len(await env.queue())
    james = (await env.get("dr.rachel.kim", JAMES)).json()
    thread = await env.thread("dr.rachel.kim", JAMES, JAMES)
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:6a1f3c9e-0000-4000-8000-000000000001",
                "resource": message(JAMES, thread=thread),
                "request": {"method": "POST", "url": "Communication"},
            },
            {  # fails at write time, after the message's step ran: a stale If-Match
                "resource": james,
                "request": {"method": "PUT", "url": JAMES, "ifMatch": 'W/"999"'},
            },
        ],
    }
    r = await env.server.http.post(
        "/fhir",
        json=bundle,
        headers={
            "Authorization": f"Bearer {env.tokens['dr.rachel.kim']}",
            "Content-Type": "application/fhir+json",
        },
    )
    assert r.status_code == 412, r.text
    assert len(await env.queue()) == before
