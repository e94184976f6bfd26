"""The prescriptions' notifications end to end (issue 14 items 3 and 4): real tokens from the
login pages, a real rest-hook receiver and a real SMTP server (aiosmtpd), the seeded server.

A refill Task the pharmacy completes tells the patient once (rest-hook, id-only) and by one
email without health information; the steps before and a later update of the completed Task
tell nobody. A declined renewal tells the patient once. An adolescent's completed refill
never reaches a parent; the same parent hears of a child's (the positive control).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fhir_server.notify.table import load_table
from fhir_server.portal.prescriptions.table import load_table as medication_table
from tests.integration.access.test_smart_enforcement import Server
from tests.integration.portal.receivers import Hook, Mailbox, status_of, until
from tests.integration.portal.test_notifications import subscription
from tests.integration.seeded import seeded_server

TABLE = load_table()
READY = TABLE.topic("https://mhs.example.org/fhir/SubscriptionTopic/refill-ready")
DECIDED = TABLE.topic("https://mhs.example.org/fhir/SubscriptionTopic/renewal-decided")
SPONSOR = "Patient/sponsor-james-carter"
JAMES_EMAIL = "james.carter@example.org"
LISINOPRIL = "MedicationRequest/medrx-james-lisinopril"
ATORVASTATIN = "MedicationRequest/medrx-james-atorvastatin"
TEEN_RX = "MedicationRequest/medrx-sophia-albuterol"
CHILD_RX = "MedicationRequest/medrx-liam-hydrocortisone"
PHARMACY = "Location/pharmacy-fm"
SCOPE = "openid fhirUser user/*.cruds"
# What an email or an endpoint must never carry: the drugs, the pharmacy, the prescriber.
HEALTH_WORDS = (
    "lisinopril", "atorvastatin", "albuterol", "hydrocortisone", "pharmacy-fm", "Kim", "mg",
)  # fmt: skip


def test_the_topics_name_the_tables_task_codes() -> None:
    """The notification table's triggers and the medications table agree (data, not code)."""
    rules = medication_table()
    assert READY is not None and DECIDED is not None
    assert READY.when is not None and DECIDED.when is not None
    assert READY.when.coding == (rules.refill.code["system"], rules.refill.code["code"])
    assert DECIDED.when.coding == (rules.renewal.code["system"], rules.renewal.code["code"])


@pytest.fixture(scope="module")
async def env(mongo_uri: str) -> AsyncIterator[tuple[Server, dict[str, str], Mailbox]]:
    mail = Mailbox().start()
    try:
        async with seeded_server(mongo_uri, smtp_url=mail.url) as (_, http):
            server = Server(http)
            tok = {
                "sponsor": await server.token("sponsor", SCOPE),
                "pcm": await server.token("practitioner", SCOPE),
            }
            yield server, tok, mail
    finally:
        mail.stop()


async def subscribe(server: Server, token: str, topic: str, hook: Hook) -> str:
    body = subscription(topic, hook.url, filt=f"Task?patient={SPONSOR}")
    r = await server.post(token, "Subscription", body)
    assert r.status_code == 201, r.text
    sid = str(r.json()["id"])
    await until(lambda: hook.of_type("handshake"), what="the handshake")
    for _ in range(100):
        if (await server.get(token, f"Subscription/{sid}")).json()["status"] == "active":
            return sid
        await asyncio.sleep(0.05)
    raise AssertionError("the subscription never became active")


async def move(server: Server, token: str, task: dict[str, Any], **change: Any) -> dict[str, Any]:
    body = {k: v for k, v in task.items() if k != "meta"} | change
    r = await server.http.put(
        f"/fhir/Task/{task['id']}", json=body, headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


async def refill(server: Server, token: str, rx: str) -> dict[str, Any]:
    body = {
        "resourceType": "Parameters",
        "parameter": [{"name": "pharmacy", "valueReference": {"reference": PHARMACY}}],
    }
    r = await server.post(token, f"{rx}/$refill", body)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def fill(server: Server, pcm: str, task: dict[str, Any]) -> dict[str, Any]:
    """The pharmacy side: accepted -> in-progress -> completed."""
    for status in ("accepted", "in-progress"):
        task = await move(server, pcm, task, status=status)
    return await move(server, pcm, task, status="completed")


def events(hook: Hook) -> list[dict[str, Any]]:
    return hook.of_type("event-notification")


def focus_of(bundle: dict[str, Any]) -> str:
    part = {p["name"]: p for p in status_of(bundle)["notification-event"]["part"]}
    return str(part["focus"]["valueReference"]["reference"])


async def test_refill_completed_notifies_once_without_health_information(
    env: tuple[Server, dict[str, str], Mailbox],
) -> None:
    server, tok, mail = env
    assert READY is not None and READY.email is not None
    hook = Hook().start()
    try:
        await subscribe(server, tok["sponsor"], READY.url, hook)
        before = len(mail.to(JAMES_EMAIL))
        task = await refill(server, tok["sponsor"], LISINOPRIL)
        for status in ("accepted", "in-progress"):
            task = await move(server, tok["pcm"], task, status=status)
        await asyncio.sleep(1.0)
        assert events(hook) == [], "a step before completed told the patient"
        done = await move(server, tok["pcm"], task, status="completed")
        got = await until(lambda: events(hook), what="the refill-ready event")
        mails = await until(lambda: mail.to(JAMES_EMAIL)[before:], what="the email")
        # A later update of the completed Task is no new transition.
        await move(server, tok["pcm"], done, note=[{"text": "picked up"}])
        await asyncio.sleep(1.0)
        assert len(events(hook)) == 1 and len(mail.to(JAMES_EMAIL)) == before + 1
        assert focus_of(got[0]).endswith(f"Task/{task['id']}")
        assert status_of(got[0])["topic"]["valueCanonical"] == READY.url
        assert [e.get("resource") for e in got[0]["entry"][1:]] == [None]  # id-only
        text = mails[0].get_payload(decode=True).decode()
        assert mails[0]["Subject"] == READY.email.subject
        assert "/portal/" in text
        raw = b"".join(hook.raw).decode()
        for word in HEALTH_WORDS:
            for where in (text, str(mails[0]["Subject"]), raw):
                assert word.lower() not in where.lower(), word
    finally:
        hook.stop()


async def test_renewal_declined_notifies_once(env: tuple[Server, dict[str, str], Mailbox]) -> None:
    server, tok, mail = env
    assert DECIDED is not None and DECIDED.email is not None
    hook = Hook().start()
    try:
        await subscribe(server, tok["sponsor"], DECIDED.url, hook)
        before = len(mail.to(JAMES_EMAIL))
        note = {"resourceType": "Parameters", "parameter": [{"name": "note", "valueString": "x"}]}
        r = await server.post(tok["sponsor"], f"{ATORVASTATIN}/$renew", note)
        assert r.status_code == 201, r.text
        task = await move(
            server, tok["pcm"], r.json(), status="rejected",
            statusReason={"text": "please book a visit first"},
        )  # fmt: skip
        got = await until(lambda: events(hook), what="the renewal-decided event")
        mails = await until(lambda: mail.to(JAMES_EMAIL)[before:], what="the email")
        await asyncio.sleep(1.0)
        assert len(events(hook)) == 1 and len(mail.to(JAMES_EMAIL)) == before + 1
        assert focus_of(got[0]).endswith(f"Task/{task['id']}")
        assert mails[0]["Subject"] == DECIDED.email.subject
        text = mails[0].get_payload(decode=True).decode()
        for word in (*HEALTH_WORDS, "visit first", "declin", "reject"):
            assert word.lower() not in text.lower(), word
    finally:
        hook.stop()


async def test_an_adolescents_refill_never_reaches_a_parent(
    env: tuple[Server, dict[str, str], Mailbox],
) -> None:
    server, tok, mail = env
    assert READY is not None
    hook = Hook().start()
    try:
        await subscribe(server, tok["sponsor"], READY.url, hook)
        before = len(mail.to(JAMES_EMAIL))
        # The seed has no login for the adolescent: the clinic files the request (plain POST).
        made = await server.post(
            tok["pcm"], "Task",
            {
                "resourceType": "Task", "status": "requested", "intent": "order",
                "code": {"coding": [medication_table().refill.code]},
                "focus": {"reference": TEEN_RX}, "owner": {"reference": PHARMACY},
                "for": {"reference": "Patient/adolescent-sophia-carter"},
            },
        )  # fmt: skip
        assert made.status_code == 201, made.text
        assert made.json()["for"]["reference"] == "Patient/adolescent-sophia-carter"
        teen = await fill(server, tok["pcm"], made.json())
        assert teen["status"] == "completed"
        await asyncio.sleep(1.5)
        assert events(hook) == [], "a parent heard of an adolescent's refill"
        assert len(mail.to(JAMES_EMAIL)) == before
        # Positive control: the same parent's subscription hears of a child's refill.
        child = await fill(server, tok["pcm"], await refill(server, tok["sponsor"], CHILD_RX))
        got = await until(lambda: events(hook), what="the child's refill-ready event")
        await asyncio.sleep(0.5)
        assert [focus_of(b).split("/")[-1] for b in events(hook)] == [child["id"]]
        assert all(not focus_of(b).endswith(teen["id"]) for b in got)
    finally:
        hook.stop()
