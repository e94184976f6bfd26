"""The notifications workflow: an `after` step on the topics' triggers (a Communication
created) that queues what must be delivered, in the write's own transaction
(portal/hooks.py), so a message and its notifications commit together or not at all.

Per recipient of the message (subscribers.py says who that is): one rest-hook notification
for each live Subscription whose topic and filter match, and one email to the recipient's
own address. Nothing is sent here; the worker (worker.py) delivers from the queue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pymongo.asynchronous.client_session import AsyncClientSession

from fhir_server.config import Settings
from fhir_server.notify.queue import NotifyStore
from fhir_server.notify.subscribers import adolescent_subject, pools_of, proxies_of, recipient
from fhir_server.notify.table import NotificationTable, load_table
from fhir_server.portal.hooks import Workflow, WriteEvent

if TYPE_CHECKING:
    from fhir_server.context import ServerContext
    from fhir_server.rest.messages import FhirRequest
    from fhir_server.storage.store import Version

Doc = dict[str, Any]
NAME = "notifications"


def references(resource: Doc, element: str) -> list[str]:
    value = resource.get(element)
    out = []
    for ref in value if isinstance(value, list) else [value]:
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
            out.append(str(ref["reference"]))
    return list(dict.fromkeys(out))


async def queue_for(
    ctx: ServerContext,
    table: NotificationTable,
    rt: str,
    interaction: str,
    resource: Doc,
    session: AsyncClientSession | None,
    old: Doc | None = None,
) -> list[Doc]:
    """The notifications one write makes, queued in `session`; returned for tests. `old`:
    the version the write replaced (a transition topic fires only when it changed)."""
    topics = table.triggered_by(rt, interaction, resource, old)
    if not topics:
        return []
    store = NotifyStore(ctx.store.db)
    focus = f"{rt}/{resource.get('id')}"
    items: list[Doc] = []
    emails: set[str] = set()
    elements = {t.names_element for t in topics}
    abouts = [r for t in topics for r in references(resource, t.about)]
    teen = await adolescent_subject(ctx, abouts[0] if abouts else None, session)
    refs = [r for e in elements for r in references(resource, e)]
    if teen is None and abouts and any(t.proxies for t in topics):
        refs += await proxies_of(ctx, abouts[0], session)
    # A topic of its own email (e.g. refill-ready) says so on the email it queues.
    own_email = next((t.url for t in topics if t.email is not None), None)
    for ref in dict.fromkeys(refs):
        if teen is not None and ref != teen and not ref.startswith("CareTeam/"):
            continue  # about a teen: nobody but the teen and care teams hears of it
        who = await recipient(ctx, ref, session)
        for topic in topics:
            for sub in await store.matching(topic.url, list(who.keys), session):
                if topic.names == "member-pool" and not await _still_in(ctx, sub, ref, session):
                    continue  # left the pool since subscribing
                items.append(
                    NotifyStore.item("rest-hook", "event-notification", sub=sub["_id"], focus=focus)
                )
        if who.email is not None and who.email.lower() not in emails:
            emails.add(who.email.lower())
            mail = NotifyStore.item("email", "event-notification", to=who.email)
            if own_email:
                mail["topic"] = own_email
            items.append(mail)
    # One notification per subscription, however many of its keys the message names.
    seen: set[str] = set()
    unique = []
    for item in items:
        key = item.get("sub") or "email:" + str(item.get("to"))
        if key not in seen:
            seen.add(key)
            unique.append(item)
    await store.enqueue(unique, session)
    return unique


async def _still_in(
    ctx: ServerContext, sub: Doc, pool: str, session: AsyncClientSession | None
) -> bool:
    owner = str(sub.get("owner") or "")
    return not owner or pool in await pools_of(ctx, owner, session)


def workflow(settings: Settings, registry: Any) -> Workflow:
    """Build the workflow from profiles/portal/notifications.json (fail-fast)."""
    table = load_table()
    types = frozenset(t.resource for t in table.topics)

    async def after(
        ctx: ServerContext,
        req: FhirRequest,
        event: WriteEvent,
        version: Version,
        session: AsyncClientSession | None,
    ) -> None:
        if version.resource is None:
            return
        await queue_for(
            ctx, table, event.rt, event.interaction, version.resource, session, event.old
        )

    return Workflow(NAME, types, after=after)
