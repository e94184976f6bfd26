"""Secure messaging as one patient app and one clinician see it (issue 12, "Tests", first
item), end to end over HTTP with real SMART tokens from the login pages, a real rest-hook
receiver and a real SMTP server (aiosmtpd) on free ports, on the seeded server.

The sponsor writes to his PCM's nurse pool with a PDF attached; the nurse finds it in the
pool's unread inbox, marks it read and answers; the sponsor's unread search finds the
answer; the response-time Task the message made completes; each subscriber's endpoint and
the sponsor's mailbox get exactly one notification, none with health information.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from fhir_server.notify.table import load_table
from seed_data.directory import CLINIC_NURSE_POOL, PEOPLE
from tests.integration.access.test_smart_enforcement import Server
from tests.integration.portal.receivers import Hook, Mailbox, until
from tests.integration.portal.test_notifications import header, subscribe, subscription
from tests.integration.seeded import seeded_server

USER = "openid fhirUser user/*.cruds"
PATIENT_TOPIC, POOL_TOPIC = (t.url for t in load_table().topics[:2])  # the messaging topics
JAMES = f"Patient/{PEOPLE['james'].id}"
JAMES_EMAIL = "james.carter@example.org"
POOL = f"CareTeam/{CLINIC_NURSE_POOL[PEOPLE['james'].clinic]}"
NURSE = "rn.jessica.moore"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
SECRET = "My knee swells after every run"


@dataclass
class Env:
    server: Server
    mail: Mailbox
    tokens: dict[str, str]

    async def post(self, who: str, url: str, body: dict[str, Any] | None = None) -> Any:
        return await self.server.http.post(
            f"/fhir/{url}",
            json=body,
            headers={
                "Authorization": f"Bearer {self.tokens[who]}",
                "Content-Type": "application/fhir+json",
            },
        )

    async def get(self, who: str, url: str, **params: str) -> Any:
        return await self.server.get(self.tokens[who], url, **params)

    async def found(self, who: str, url: str, **params: str) -> list[dict[str, Any]]:
        r = await self.get(who, url, **params)
        assert r.status_code == 200, r.text
        return [e["resource"] for e in r.json().get("entry", [])]


@pytest.fixture(scope="module")
async def env(mongo_uri: str) -> AsyncIterator[Env]:
    mail = Mailbox().start()
    try:
        async with seeded_server(mongo_uri, smtp_url=mail.url) as (_, http):
            server = Server(http)
            tokens = {who: await server.token(who, USER) for who in ("sponsor", NURSE)}
            yield Env(server, mail, tokens)
    finally:
        mail.stop()


async def test_sponsor_writes_the_pool_nurse_answers_each_hears_once(env: Env) -> None:
    sponsor_hook, nurse_hook = Hook().start(), Hook().start()
    try:
        await subscribe(
            env,
            "sponsor",
            subscription(PATIENT_TOPIC, sponsor_hook.url, filt=f"Communication?recipient={JAMES}"),
            sponsor_hook,
        )
        await subscribe(env, NURSE, subscription(POOL_TOPIC, nurse_hook.url), nurse_hook)

        # The sponsor opens a thread to the pool and writes, with a PDF attached.
        h = await env.post("sponsor", "Communication", header(JAMES, POOL))
        assert h.status_code == 201, h.text
        thread = f"Communication/{h.json()['id']}"
        attachment = {
            "contentType": "application/pdf",
            "title": "running-log.pdf",
            "data": base64.b64encode(PDF).decode(),
        }
        sent = await env.post(
            "sponsor",
            "Communication",
            {
                "resourceType": "Communication",
                "status": "completed",
                "partOf": [{"reference": thread}],
                "subject": {"reference": JAMES},
                "payload": [{"contentString": SECRET}, {"contentAttachment": attachment}],
            },
        )
        assert sent.status_code == 201, sent.text
        msg = sent.json()
        assert msg["sender"] == {"reference": JAMES} and msg["sent"]
        mid = f"Communication/{msg['id']}"

        # The nurse finds it in the pool's unread inbox, with its attachment.
        inbox = await env.found(
            NURSE, "Communication", recipient=POOL, **{"received:missing": "true"}
        )
        [got] = [m for m in inbox if m["id"] == msg["id"]]
        assert base64.b64decode(got["payload"][1]["contentAttachment"]["data"]) == PDF
        # Its response-time Task is open, owned by the pool, and the sponsor sees it too.
        [task] = await env.found(NURSE, "Task", focus=mid)
        assert task["status"] == "requested" and task["owner"] == {"reference": POOL}
        assert [t["id"] for t in await env.found("sponsor", "Task", focus=mid)] == [task["id"]]

        r = await env.post(NURSE, f"{mid}/$mark-read")
        assert r.status_code == 200, r.text
        assert r.json()["received"]
        assert msg["id"] not in {
            m["id"]
            for m in await env.found(
                NURSE, "Communication", recipient=POOL, **{"received:missing": "true"}
            )
        }
        # The sender sees when it was read.
        mine = await env.get("sponsor", mid)
        assert mine.json()["received"] == r.json()["received"]

        reply = await env.post(
            NURSE,
            "Communication",
            {
                "resourceType": "Communication",
                "status": "completed",
                "partOf": [{"reference": thread}],
                "inResponseTo": [{"reference": mid}],
                "subject": {"reference": JAMES},
                "recipient": [{"reference": JAMES}],
                "payload": [{"contentString": "Ice it and rest; book a visit if it persists."}],
            },
        )
        assert reply.status_code == 201, reply.text
        rid = reply.json()["id"]
        unread = await env.found(
            "sponsor", "Communication", recipient=JAMES, **{"received:missing": "true"}
        )
        assert rid in {m["id"] for m in unread}
        [done] = await env.found("sponsor", "Task", focus=mid)
        assert done["status"] == "completed"
        assert done["output"][0]["valueReference"] == {"reference": f"Communication/{rid}"}

        # Exactly one notification each: the nurse of the sponsor's message, the sponsor of
        # the answer (endpoint and mailbox), none carrying what was written.
        pool_events = await until(lambda: nurse_hook.of_type("event-notification"), what="pool")
        own_events = await until(lambda: sponsor_hook.of_type("event-notification"), what="own")
        mails = await until(lambda: env.mail.to(JAMES_EMAIL), what="the email")
        await asyncio.sleep(1.0)  # anything extra would have come by now
        assert len(nurse_hook.of_type("event-notification")) == len(pool_events) == 1
        assert len(sponsor_hook.of_type("event-notification")) == len(own_events) == 1
        assert len(env.mail.to(JAMES_EMAIL)) == len(mails) == 1
        assert own_events[0]["entry"][1]["fullUrl"].endswith(f"Communication/{rid}")
        assert pool_events[0]["entry"][1]["fullUrl"].endswith(mid)
        wire = b"".join(nurse_hook.raw + sponsor_hook.raw).decode()
        text = mails[0].get_payload(decode=True).decode()
        for secret in (SECRET, "Ice it", "running-log", base64.b64encode(PDF).decode()[:16]):
            assert secret not in wire and secret not in text, secret
    finally:
        sponsor_hook.stop()
        nurse_hook.stop()
