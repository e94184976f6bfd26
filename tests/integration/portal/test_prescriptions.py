"""Prescriptions end to end over HTTP with real SMART tokens from the login flow: the
eligibility extension on reads and searches, `$refill` with a pharmacy (idempotent while
open, 422 with its reason), the pharmacy moving the Task and dispensing, `$renew` to the
PCM who approves or declines, and two parallel refills of the last authorization. At the end,
the notifications (refill ready, renewal decided) with a real rest-hook receiver and a
real SMTP server (aiosmtpd): once, on the transition, without health information, and
never to a parent for an adolescent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest

from fhir_server.notify.table import load_table as notification_table
from fhir_server.portal.prescriptions.table import load_table
from tests.integration.access.test_smart_enforcement import Server
from tests.integration.portal.receivers import Hook, Mailbox, status_of, until
from tests.integration.portal.test_notifications import subscription
from tests.integration.seeded import seeded_server

RULES = load_table()
SPONSOR = "Patient/sponsor-james-carter"
LISINOPRIL = "MedicationRequest/medrx-james-lisinopril"
NAPROXEN = "MedicationRequest/medrx-james-naproxen"
ATORVASTATIN = "MedicationRequest/medrx-james-atorvastatin"
PCM = "Practitioner/pcm-rachel-kim"
PHARMACY = "Location/pharmacy-fm"
PATIENT_SCOPE = "openid fhirUser user/*.cruds"


@pytest.fixture(scope="module")
def mail() -> Iterator[Mailbox]:
    """A real SMTP server for the notification emails (test_prescription_notices.py)."""
    box = Mailbox().start()
    try:
        yield box
    finally:
        box.stop()


@pytest.fixture(scope="module")
async def env(mongo_uri: str, mail: Mailbox) -> AsyncIterator[tuple[Server, dict[str, str]]]:
    async with seeded_server(mongo_uri, smtp_url=mail.url) as (_, http):
        server = Server(http)
        tok = {
            "sponsor": await server.token("sponsor", PATIENT_SCOPE),
            "pcm": await server.token("practitioner", "openid fhirUser user/*.cruds"),
        }
        yield server, tok


def eligibility_of(mr: dict) -> tuple[str, str]:
    ext = next(e for e in mr.get("extension", []) if e["url"] == RULES.extension_url)
    parts = {e["url"]: e for e in ext["extension"]}
    return parts["eligibility"]["valueCode"], parts["reason"]["valueCoding"]["code"]


def refill_body(pharmacy: str = PHARMACY) -> dict:
    return {
        "resourceType": "Parameters",
        "parameter": [{"name": "pharmacy", "valueReference": {"reference": pharmacy}}],
    }


# --- Notifications first: the tests below send the sponsor emails of their own. ---

NOTIFY = notification_table()
READY = NOTIFY.topic("https://mhs.example.org/fhir/SubscriptionTopic/refill-ready")
DECIDED = NOTIFY.topic("https://mhs.example.org/fhir/SubscriptionTopic/renewal-decided")
JAMES_EMAIL = "james.carter@example.org"
TEEN_RX = "MedicationRequest/medrx-sophia-albuterol"
SOPHIA = "Patient/adolescent-sophia-carter"
CHILD_RX = "MedicationRequest/medrx-liam-hydrocortisone"
# What an email or an endpoint must never carry: the drugs, the pharmacy, the prescriber.
FRESH_RX = {
    "resourceType": "MedicationRequest",
    "status": "active",
    "intent": "order",
    "subject": {"reference": SPONSOR},
    "requester": {"reference": PCM},
    "medicationCodeableConcept": {"text": "lisinopril 10 MG Oral Tablet"},
    "dispenseRequest": {
        "numberOfRepeatsAllowed": 2,
        "validityPeriod": {"start": "2026-01-01", "end": "2099-01-01"},
    },
}
HEALTH_WORDS = (
    "lisinopril", "atorvastatin", "albuterol", "hydrocortisone", "pharmacy-fm", "Kim", "mg",
)  # fmt: skip


def test_the_topics_name_the_tables_task_codes() -> None:
    """The notification table's triggers and the medications table agree (data, not code)."""
    assert READY is not None and DECIDED is not None
    assert READY.when is not None and DECIDED.when is not None
    assert READY.when.coding == (RULES.refill.code["system"], RULES.refill.code["code"])
    assert DECIDED.when.coding == (RULES.renewal.code["system"], RULES.renewal.code["code"])


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


async def unsubscribe(server: Server, token: str) -> None:
    """Delete the caller's Subscriptions, so a stopped receiver gets no retries later."""
    r = await server.get(token, "Subscription")
    for e in r.json().get("entry", []):
        gone = await server.http.delete(
            f"/fhir/Subscription/{e['resource']['id']}",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert gone.status_code == 204, gone.text


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
    env: tuple[Server, dict[str, str]], mail: Mailbox
) -> None:
    server, tok = env
    assert READY is not None and READY.email is not None
    hook = Hook().start()
    try:
        await subscribe(server, tok["sponsor"], READY.url, hook)
        before = len(mail.to(JAMES_EMAIL))
        # A prescription of its own, so the count tests below see the seed's untouched.
        made = await server.post(tok["pcm"], "MedicationRequest", FRESH_RX)
        assert made.status_code == 201, made.text
        task = await refill(server, tok["sponsor"], f"MedicationRequest/{made.json()['id']}")
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
        await unsubscribe(server, tok["sponsor"])


async def test_renewal_declined_notifies_once(
    env: tuple[Server, dict[str, str]], mail: Mailbox
) -> None:
    server, tok = env
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
        await unsubscribe(server, tok["sponsor"])


async def test_an_adolescents_refill_never_reaches_a_parent(
    env: tuple[Server, dict[str, str]], mail: Mailbox
) -> None:
    server, tok = env
    assert READY is not None
    hook = Hook().start()
    try:
        await subscribe(server, tok["sponsor"], READY.url, hook)
        before = len(mail.to(JAMES_EMAIL))
        # The teen's telecom holds a parent's address: that email is skipped, not sent.
        sophia = (await server.get(tok["pcm"], SOPHIA)).json()
        with_parents = [*sophia.get("telecom", []), {"system": "email", "value": JAMES_EMAIL}]
        put = await server.http.put(
            f"/fhir/{SOPHIA}", json={**sophia, "telecom": with_parents},
            headers={"Authorization": f"Bearer {tok['pcm']}"},
        )  # fmt: skip
        assert put.status_code == 200, put.text
        # The seed has no login for the adolescent: the clinic files the request (plain POST).
        made = await server.post(
            tok["pcm"], "Task",
            {
                "resourceType": "Task", "status": "requested", "intent": "order",
                "code": {"coding": [RULES.refill.code]},
                "focus": {"reference": TEEN_RX}, "owner": {"reference": PHARMACY},
                "for": {"reference": SOPHIA},
            },
        )  # fmt: skip
        assert made.status_code == 201, made.text
        assert made.json()["for"]["reference"] == SOPHIA
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
        # The father's RelatedPerson address (the seed's) gets the child's email: one.
        await until(lambda: mail.to(JAMES_EMAIL)[before:], what="the child's email")
        assert len(mail.to(JAMES_EMAIL)) == before + 1
    finally:
        hook.stop()
        await unsubscribe(server, tok["sponsor"])


async def test_every_prescription_read_carries_its_eligibility(
    env: tuple[Server, dict[str, str]],
) -> None:
    server, tok = env
    r = await server.get(tok["sponsor"], "MedicationRequest", subject=SPONSOR)
    assert r.status_code == 200, r.text
    found = {f"MedicationRequest/{e['resource']['id']}": e["resource"] for e in r.json()["entry"]}
    assert eligibility_of(found[LISINOPRIL]) == ("refillable", "refills-remain")
    assert eligibility_of(found[NAPROXEN]) == ("renewable", "no-refills-left")
    assert eligibility_of(found[ATORVASTATIN]) == ("renewable", "expired")
    one = await server.get(tok["sponsor"], NAPROXEN)
    assert eligibility_of(one.json()) == ("renewable", "no-refills-left")


async def test_refill_then_pharmacy_dispenses(env: tuple[Server, dict[str, str]]) -> None:
    server, tok = env
    r = await server.post(tok["sponsor"], f"{LISINOPRIL}/$refill", refill_body())
    assert r.status_code == 201, r.text
    task = r.json()
    assert task["focus"]["reference"] == LISINOPRIL
    assert task["for"]["reference"] == SPONSOR
    assert task["owner"]["reference"] == PHARMACY
    assert task["intent"] == "order" and task["status"] == "requested"
    assert task["requester"]["reference"] == SPONSOR
    # Asked again while open: the open Task, 200.
    again = await server.post(tok["sponsor"], f"{LISINOPRIL}/$refill", refill_body())
    assert again.status_code == 200 and again.json()["id"] == task["id"]
    # The count moved: one refill fewer on the next read.
    mr = (await server.get(tok["sponsor"], LISINOPRIL)).json()
    ext = next(e for e in mr["extension"] if e["url"] == RULES.extension_url)
    left = {e["url"]: e for e in ext["extension"]}["refillsRemaining"]["valueUnsignedInt"]
    assert left == mr["dispenseRequest"]["numberOfRepeatsAllowed"] - 1
    # A patient may not move it on.
    moved = await server.http.put(
        f"/fhir/Task/{task['id']}",
        json={**task, "status": "completed"},
        headers={"Authorization": f"Bearer {tok['sponsor']}"},
    )
    assert moved.status_code == 422, moved.text
    # The pharmacy side moves it requested -> accepted -> in-progress -> completed.
    current = task
    for status in ("accepted", "in-progress"):
        current = {k: v for k, v in current.items() if k != "meta"} | {"status": status}
        r = await server.http.put(
            f"/fhir/Task/{task['id']}", json=current,
            headers={"Authorization": f"Bearer {tok['pcm']}"},
        )  # fmt: skip
        assert r.status_code == 200, r.text
        current = r.json()
    dispense = {
        "resourceType": "MedicationDispense",
        "status": "completed",
        "subject": {"reference": SPONSOR},
        "authorizingPrescription": [{"reference": LISINOPRIL}],
        "medicationCodeableConcept": mr["medicationCodeableConcept"],
        "whenHandedOver": "2026-01-05T10:00:00Z",
    }
    d = await server.post(tok["pcm"], "MedicationDispense", dispense)
    assert d.status_code == 201, d.text
    done = {k: v for k, v in current.items() if k != "meta"} | {
        "status": "completed",
        "output": [
            {
                "type": {"text": "dispense"},
                "valueReference": {"reference": f"MedicationDispense/{d.json()['id']}"},
            }
        ],
    }
    r = await server.http.put(
        f"/fhir/Task/{task['id']}", json=done, headers={"Authorization": f"Bearer {tok['pcm']}"}
    )
    assert r.status_code == 200, r.text
    # The patient sees it with plain searches.
    seen = await server.get(tok["sponsor"], "Task", focus=LISINOPRIL, status="completed")
    assert [e["resource"]["id"] for e in seen.json()["entry"]] == [task["id"]]
    disp = await server.get(tok["sponsor"], "MedicationDispense", prescription=LISINOPRIL)
    assert d.json()["id"] in {e["resource"]["id"] for e in disp.json().get("entry", [])}


async def test_wrong_requests_answer_their_422(env: tuple[Server, dict[str, str]]) -> None:
    server, tok = env
    r = await server.post(tok["sponsor"], f"{NAPROXEN}/$refill", refill_body())
    assert r.status_code == 422, r.text
    issue = r.json()["issue"][0]
    assert issue["code"] == "business-rule" and "renewal" in issue["diagnostics"]
    r = await server.post(
        tok["sponsor"], f"{LISINOPRIL}/$renew", {"resourceType": "Parameters", "parameter": []}
    )
    assert r.status_code == 422 and "request a refill instead" in r.text
    r = await server.post(tok["sponsor"], f"{LISINOPRIL}/$refill", refill_body(SPONSOR))
    assert r.status_code in (400, 422), r.text


async def test_renewal_approved_and_declined(env: tuple[Server, dict[str, str]]) -> None:
    server, tok = env
    note = {"resourceType": "Parameters", "parameter": [{"name": "note", "valueString": "out"}]}
    r = await server.post(tok["sponsor"], f"{NAPROXEN}/$renew", note)
    assert r.status_code == 201, r.text
    task = r.json()
    assert task["owner"]["reference"] == PCM and task["for"]["reference"] == SPONSOR
    proposal_ref = task["focus"]["reference"]
    proposal = (await server.get(tok["sponsor"], proposal_ref)).json()
    assert proposal["intent"] == "proposal"
    assert proposal["priorPrescription"]["reference"] == NAPROXEN
    assert proposal["requester"]["reference"] == SPONSOR
    again = await server.post(tok["sponsor"], f"{NAPROXEN}/$renew", note)
    assert again.status_code == 200 and again.json()["id"] == task["id"]
    # The PCM approves: a new order, then the Task completed with it as output.
    old = (await server.get(tok["pcm"], NAPROXEN)).json()
    order = {
        k: v for k, v in old.items() if k not in ("id", "meta", "extension", "dispenseRequest")
    } | {
        "priorPrescription": {"reference": NAPROXEN},
        "requester": {"reference": PCM},
        "dispenseRequest": {
            "numberOfRepeatsAllowed": 3,
            "validityPeriod": {"start": "2026-01-01", "end": "2099-01-01"},
        },
    }
    made = await server.post(tok["pcm"], "MedicationRequest", order)
    assert made.status_code == 201, made.text
    unfinished = {k: v for k, v in task.items() if k != "meta"} | {"status": "completed"}
    r = await server.http.put(
        f"/fhir/Task/{task['id']}", json=unfinished,
        headers={"Authorization": f"Bearer {tok['pcm']}"},
    )  # fmt: skip
    assert r.status_code == 422 and "Task.output" in r.text
    approved = unfinished | {
        "output": [
            {
                "type": {"text": "prescription"},
                "valueReference": {"reference": f"MedicationRequest/{made.json()['id']}"},
            }
        ]
    }
    r = await server.http.put(
        f"/fhir/Task/{task['id']}", json=approved, headers={"Authorization": f"Bearer {tok['pcm']}"}
    )
    assert r.status_code == 200, r.text
    assert (await server.get(tok["sponsor"], proposal_ref)).json()["status"] == "completed"
    new = (await server.get(tok["sponsor"], f"MedicationRequest/{made.json()['id']}")).json()
    assert eligibility_of(new) == ("refillable", "refills-remain")
    # Declined: the expired one, with a reason.
    r = await server.post(tok["sponsor"], f"{ATORVASTATIN}/$renew", note)
    assert r.status_code == 201, r.text
    t2 = {k: v for k, v in r.json().items() if k != "meta"} | {"status": "rejected"}
    no_reason = await server.http.put(
        f"/fhir/Task/{t2['id']}", json=t2, headers={"Authorization": f"Bearer {tok['pcm']}"}
    )
    assert no_reason.status_code == 422, no_reason.text
    t2["statusReason"] = {"text": "please book a visit first"}
    r = await server.http.put(
        f"/fhir/Task/{t2['id']}", json=t2, headers={"Authorization": f"Bearer {tok['pcm']}"}
    )
    assert r.status_code == 200, r.text
    proposal2 = (await server.get(tok["sponsor"], t2["focus"]["reference"])).json()
    assert proposal2["status"] == "cancelled"


async def test_two_parallel_refills_of_the_last_one(env: tuple[Server, dict[str, str]]) -> None:
    """One Task, one 422: the count is a conditional write in the Task's transaction."""
    server, tok = env
    last = {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "subject": {"reference": SPONSOR},
        "requester": {"reference": PCM},
        "medicationCodeableConcept": {"text": "lisinopril 10 MG Oral Tablet"},
        "dispenseRequest": {
            "numberOfRepeatsAllowed": 1,
            "validityPeriod": {"start": "2026-01-01", "end": "2099-01-01"},
        },
    }
    made = await server.post(tok["pcm"], "MedicationRequest", last)
    assert made.status_code == 201, made.text
    url = f"MedicationRequest/{made.json()['id']}/$refill"
    statuses: list[int] = []
    # Two different pharmacies, so neither is a repeat of the other's open request.

    async def one(pharmacy: str) -> None:
        statuses.append((await server.post(tok["sponsor"], url, refill_body(pharmacy))).status_code)

    async with anyio.create_task_group() as tg:
        tg.start_soon(one, PHARMACY)
        tg.start_soon(one, "Organization/lakeside-mmc")
    tasks = await server.get(tok["sponsor"], "Task", focus=f"MedicationRequest/{made.json()['id']}")
    assert len(tasks.json().get("entry", [])) == 1
    assert sorted(statuses) == [201, 422], statuses
