"""The leak matrix's notification paths (issue 12): no rest-hook notification and no email
about an adolescent's message reaches a parent, and nobody subscribes to another's messages.

Actors and ids come from the leak matrix (test_leak_matrix.py) and the seed's declared
facts; the receivers are real (tests/integration/portal/receivers.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from fhir_server.notify.table import load_table
from fhir_server.notify.workflow import queue_for
from seed_data.directory import related_person_id
from tests.integration.access.test_leak_matrix import AGE, PATIENT, TABLE
from tests.integration.access.test_smart_enforcement import Server
from tests.integration.portal.receivers import Hook, Mailbox, until
from tests.integration.portal.test_notifications import (
    PATIENT_TOPIC,
    POOL,
    header,
    message,
    subscription,
)
from tests.integration.seeded import seeded_server

USER = "openid fhirUser user/*.cruds"
JAMES, SOPHIA, LIAM = (f"Patient/{PATIENT[k]}" for k in ("james", "sophia", "liam"))
JAMES_EMAIL = "james.carter@example.org"
TEEN_OWN_EMAIL = "sophia.own@example.org"


@dataclass
class Env:
    server: Server
    app: Any
    mail: Mailbox
    tokens: dict[str, str]

    async def post(self, who: str, url: str, body: dict[str, Any]) -> Any:
        return await self.server.post(self.tokens[who], url, body)

    async def put(self, who: str, url: str, body: dict[str, Any]) -> Any:
        return await self.server.http.put(
            f"/fhir/{url}",
            json=body,
            headers={
                "Authorization": f"Bearer {self.tokens[who]}",
                "Content-Type": "application/fhir+json",
            },
        )


@pytest.fixture(scope="module")
async def env(mongo_uri: str) -> AsyncIterator[Env]:
    mail = Mailbox().start()
    try:
        async with seeded_server(mongo_uri, smtp_url=mail.url) as (app, http):
            server = Server(http)
            tokens = {
                w: await server.token(w, USER) for w in ("sponsor", "spouse", "dr.rachel.kim")
            }
            yield Env(server, app, mail, tokens)
    finally:
        mail.stop()


async def test_no_notification_about_a_teens_message_reaches_a_parent(env: Env) -> None:
    # The seed facts the test relies on (family.json bands): Sophia is a teen, Liam a child.
    restricted = TABLE["ages"]["restricted_from"]
    assert AGE["liam"] < restricted <= AGE["sophia"]
    ctx = env.app.state.ctx
    db = ctx.store.db
    hooks = {who: Hook().start() for who in ("sponsor", "spouse")}
    try:
        for who, hook in hooks.items():
            r = await env.post(who, "Subscription", subscription(PATIENT_TOPIC, hook.url))
            assert r.status_code == 201, r.text
        for hook in hooks.values():
            await until(lambda hook=hook: hook.of_type("handshake"), what="a handshake")
        subs = {d["_id"] for d in await db.subscriptions.find({}).to_list(None)}
        # A teen whose telecom is a parent's address: the email is skipped, not sent there.
        kim = "dr.rachel.kim"
        teen = (await env.server.get(env.tokens[kim], SOPHIA)).json()
        teen["telecom"] = [*teen.get("telecom", []), {"system": "email", "value": JAMES_EMAIL}]
        assert (await env.put(kim, SOPHIA, teen)).status_code == 200
        r = await env.post(kim, "Communication", header(SOPHIA, SOPHIA))
        assert r.status_code == 201, r.text
        teen_thread = f"Communication/{r.json()['id']}"
        r = await env.post(kim, "Communication", message(SOPHIA, SOPHIA, thread=teen_thread))
        assert r.status_code == 201, r.text
        # Addressing a parent in the teen's thread is refused by the thread rules; written
        # anyway (by a system writer), the notification step still tells no parent.
        to_parent = [
            message(
                f"RelatedPerson/{related_person_id('james', 'sophia')}", SOPHIA, thread=teen_thread
            ),
            message(JAMES, SOPHIA, thread=teen_thread),
        ]
        for body in to_parent:
            r = await env.post(kim, "Communication", body)
            assert r.status_code == 422, r.text
            written = {**body, "id": "written-by-a-system"}
            queued = await queue_for(ctx, load_table(), "Communication", "create", written, None)
            assert not {q.get("sub") for q in queued} & subs
            assert JAMES_EMAIL not in {q.get("to") for q in queued}
        # The child under 12: the father writes for Liam (as his RelatedPerson), the PCM
        # answers him: that does reach the father (one event, one email), and shows the
        # worker ran meanwhile.
        r = await env.post("sponsor", "Communication", header(LIAM, POOL))
        assert r.status_code == 201, r.text
        liam_thread = f"Communication/{r.json()['id']}"
        r = await env.post("sponsor", "Communication", message(POOL, LIAM, thread=liam_thread))
        assert r.status_code == 201, r.text
        assert (
            r.json()["sender"]["reference"] == f"RelatedPerson/{related_person_id('james', 'liam')}"
        )
        reply = message(r.json()["sender"]["reference"], LIAM, thread=liam_thread)
        reply["inResponseTo"] = [{"reference": f"Communication/{r.json()['id']}"}]
        r = await env.post(kim, "Communication", reply)
        assert r.status_code == 201, r.text
        liam_message = r.json()["id"]
        sponsor = hooks["sponsor"]
        events = await until(lambda: sponsor.of_type("event-notification"), what="Liam's event")
        await until(lambda: env.mail.to(JAMES_EMAIL), what="the father's email about Liam")
        await asyncio.sleep(1.5)
        assert len(sponsor.of_type("event-notification")) == 1
        assert liam_message in events[0]["entry"][1]["fullUrl"]
        assert hooks["spouse"].of_type("event-notification") == []
        assert len(env.mail.to(JAMES_EMAIL)) == 1
        # With an address of her own, the teen's email goes there, and only there.
        teen = (await env.server.get(env.tokens[kim], SOPHIA)).json()
        teen["telecom"] = [t for t in teen["telecom"] if t.get("system") != "email"]
        teen["telecom"].append({"system": "email", "value": TEEN_OWN_EMAIL})
        assert (await env.put(kim, SOPHIA, teen)).status_code == 200
        r = await env.post(kim, "Communication", message(SOPHIA, SOPHIA, thread=teen_thread))
        assert r.status_code == 201, r.text
        await until(lambda: env.mail.to(TEEN_OWN_EMAIL), what="the teen's own email")
        await asyncio.sleep(1.0)
        assert len(env.mail.to(TEEN_OWN_EMAIL)) == 1
        assert len(env.mail.to(JAMES_EMAIL)) == 1
        assert {a for rcpts, _ in env.mail.messages for a in rcpts} == {
            JAMES_EMAIL,
            TEEN_OWN_EMAIL,
        }
        assert len(sponsor.of_type("event-notification")) == 1
        assert hooks["spouse"].of_type("event-notification") == []
    finally:
        for hook in hooks.values():
            hook.stop()


async def test_a_patient_cannot_subscribe_to_anothers_messages(env: Env) -> None:
    db = env.app.state.ctx.store.db
    before = await db.subscriptions.count_documents({})
    url = "http://127.0.0.1:9/hook"
    for who, other in (("sponsor", SOPHIA), ("sponsor", LIAM), ("spouse", JAMES)):
        body = subscription(PATIENT_TOPIC, url, filt=f"Communication?recipient={other}")
        r = await env.post(who, "Subscription", body)
        assert r.status_code == 403, r.text
        assert r.json()["issue"][0]["code"] == "forbidden"
    assert await db.subscriptions.count_documents({}) == before
