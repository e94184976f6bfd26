"""Notifications of the booking workflow: the patient's topics and the clinic team's topic
(profiles/portal/notifications.json, the `appointment-*` topics), queued in the booking's
own transaction so a booking and its notifications commit together or not at all.

Rest-hook only, id-only or empty as every Subscription here: the table's email text is
about secure messages, and an email must never carry health information (docs/portal.md,
"Appointments").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pymongo.asynchronous.client_session import AsyncClientSession

from fhir_server.notify.queue import NotifyStore
from fhir_server.notify.subscribers import recipient

if TYPE_CHECKING:
    from fhir_server.context import ServerContext

BASE = "https://mhs.example.org/fhir/SubscriptionTopic/"
BOOKED = BASE + "appointment-booked"
CANCELLED = BASE + "appointment-cancelled"
ANSWERED = BASE + "appointment-request-answered"
TEAM = BASE + "appointment-activity-for-team"


async def notify(
    ctx: ServerContext,
    topic: str,
    patient: str,
    team: str | None,
    focus: str,
    session: AsyncClientSession | None,
) -> int:
    """Queue one notification per matching Subscription of the patient (and of the clinic
    team's members); returns how many were queued."""
    store = NotifyStore(ctx.store.db)
    who = await recipient(ctx, patient, session)
    subs = await store.matching(topic, list(who.keys), session)
    if team is not None:
        subs += await store.matching(TEAM, [team], session)
    seen: set[str] = set()
    items = []
    for sub in subs:
        if sub["_id"] not in seen:
            seen.add(sub["_id"])
            items.append(
                NotifyStore.item("rest-hook", "event-notification", sub=sub["_id"], focus=focus)
            )
    await store.enqueue(items, session)
    return len(items)
