"""Results release on the write path (portal/hooks.py): holds checked, a patient's own delay
applied, holds carried to earlier versions, every hold and release audited, and the
"new results are available" notification queued for the instant the patient may see it.

- `before`: a hold (the table's extension) may be set, changed or removed by clinicians and
  system clients only; a new or changed one needs a lawful reason of the table and an expiry
  in the future, at most `hold.max_days` ahead. A result that becomes released by status gets
  the patient's own delay for its category (Patient/[id]/$result-delay: release_delays.py) as
  a hold with the reason `patient-request`, unless it carries a hold already.
- `after` (in the write's transaction): the hold is given to every earlier version of the
  result (store.hold_versions), so vread and history hide exactly what reads hide; a change of
  hold writes an AuditEvent for the privacy officer (in no patient's compartment, so the
  patient does not learn of the hold from the log); and when the result was not visible to
  the patient before this write, pending notifications of it are cancelled and new ones
  queued `due` at the instant it becomes visible: now, or the hold's expiry. The worker
  delivers them then, so a hold that runs out is told without any write.
- `view`: patient and proxy tokens do not get the hold extension once a hold has run out
  (the reason is the clinicians' business; the audit trail keeps it).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from pymongo.asynchronous.client_session import AsyncClientSession

from fhir_server import clock
from fhir_server.access import audit as balp
from fhir_server.access.family import reference
from fhir_server.access.policy import AccessPolicy
from fhir_server.access.release import FOREVER, Hold, ReleaseTable, load_table
from fhir_server.access.release_delays import delay_for
from fhir_server.config import Settings
from fhir_server.errors import Forbidden, Issue, Unprocessable
from fhir_server.notify.queue import NotifyStore
from fhir_server.notify.subscribers import adolescent_subject, recipient
from fhir_server.notify.table import load_table as notification_table
from fhir_server.portal.hooks import Workflow, WriteEvent

if TYPE_CHECKING:
    from fhir_server.context import ServerContext
    from fhir_server.rest.messages import FhirRequest
    from fhir_server.storage.store import Version

Doc = dict[str, Any]
NAME = "release"
TOPIC = "https://mhs.example.org/fhir/SubscriptionTopic/results-available"
EVENT_SYSTEM = "https://mhs.example.org/fhir/CodeSystem/result-release-event"
HOLDERS = frozenset({"clinician", "break-glass", "system"})


def _refuse(text: str, code: str, where: tuple[str, ...]) -> Unprocessable:
    return Unprocessable(text, code=code, issues=[Issue(code, text, expression=where)])


_memos: WeakKeyDictionary[AsyncClientSession, dict[Any, Any]] = WeakKeyDictionary()


def session_memo(session: AsyncClientSession | None) -> dict[Any, Any]:
    """What one transaction has looked up already (whom a patient's results are told to,
    the patient's delays): a bundle of a patient's results reads them once. Nothing
    outlives the session, and within it the transaction's snapshot does not change."""
    if session is None:
        return {}
    try:
        return _memos.setdefault(session, {})
    except TypeError:  # a session type without weak references: no memo
        return {}


def check_hold(table: ReleaseTable, rt: str, new: Doc, old: Doc | None, now: datetime) -> None:
    """422 for a hold that is malformed, states no lawful reason, or has no expiry within
    the table's maximum; a hold carried over unchanged from the old version is left be."""
    raw = [
        e
        for e in new.get("extension") or []
        if isinstance(e, dict) and e.get("url") == table.extension
    ]
    if not raw:
        return
    where = (f"{rt}.extension('{table.extension}')",)
    if len(raw) > 1:
        raise _refuse("a result carries at most one hold", "business-rule", where)
    hold = table.hold_of(new)
    if hold is None:
        raise _refuse(
            "a hold needs a 'reason' (valueCoding) and an 'expires' instant (valueDateTime "
            "with a time and zone): a hold without an expiry would withhold the result for good",
            "required",
            where,
        )
    if old is not None and table.hold_of(old) == hold:
        return
    if hold.reason not in table.reasons:
        raise _refuse(
            f"{hold.reason!r} is not a lawful reason to hold a result; the reasons are "
            f"{sorted(table.reasons)}",
            "code-invalid",
            where,
        )
    if hold.expires <= now:
        raise _refuse("a hold's expiry must be in the future", "business-rule", where)
    if hold.expires > now + table.max_hold:
        raise _refuse(
            f"a hold may last at most {table.max_hold.days} days; set 'expires' no later "
            f"than {(now + table.max_hold).isoformat()}",
            "business-rule",
            where,
        )


def visible_from(table: ReleaseTable, rt: str, resource: Doc | None) -> datetime | None:
    """None: at once; FOREVER: not by time."""
    return table.hidden_until(rt, resource) if resource is not None else FOREVER


def hold_audit(
    rt: str,
    rid: str,
    req: FhirRequest,
    before: Hold | None,
    after: Hold | None,
    table: ReleaseTable,
) -> Doc:
    """The AuditEvent of a hold placed, changed or lifted: who, which result, the reason
    and the expiry. It names no Patient, so it sits in no patient's compartment."""
    code = "hold" if before is None else ("release" if after is None else "hold-changed")
    auth = req.policy.auth
    who: Doc = (
        {"reference": auth.fhir_user}
        if auth is not None and auth.fhir_user
        else {"identifier": {"value": (auth.client_id if auth is not None else None) or "server"}}
    )
    shown = after or before
    assert shown is not None
    return {
        "resourceType": "AuditEvent",
        "id": uuid.uuid4().hex,
        "type": {"system": balp.EVENT_TYPE, "code": "rest", "display": "RESTful Operation"},
        "subtype": [{"system": EVENT_SYSTEM, "code": code}],
        "action": "U",
        "recorded": clock.now().isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "outcome": "0",
        "purposeOfEvent": [
            {
                "coding": [
                    {
                        "system": table.reason_system,
                        "code": shown.reason,
                        "display": table.reasons.get(shown.reason, shown.reason),
                    }
                ]
            }
        ],
        "agent": [
            {
                "type": {"coding": [{"system": balp.PARTICIPATION, "code": "IRCP"}]},
                "who": who,
                "requestor": True,
            }
        ],
        "source": {"observer": {"display": balp.SERVER}},
        "entity": [
            {
                "what": {"reference": f"{rt}/{rid}"},
                "type": {"system": balp.ENTITY_TYPE, "code": "2", "display": "System Object"},
                "role": {"system": balp.OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
                "detail": [
                    {"type": "expires", "valueString": shown.expires.isoformat()},
                    {"type": "previous-expires", "valueString": before.expires.isoformat()}
                    if before is not None
                    else {"type": "previous-expires", "valueString": "none"},
                ],
            }
        ],
    }


async def queue_results_available(
    ctx: ServerContext,
    focus: str,
    subject: str | None,
    due: datetime,
    session: AsyncClientSession | None,
) -> list[Doc]:
    """The notifications of one result becoming visible to its patient at `due`: the
    patient's rest-hook Subscriptions and email, and for a child under the restricted age
    the parents' (subscribers.recipient); for a teen nobody else (the adolescent promise)."""
    if subject is None or not subject.startswith("Patient/"):
        return []
    table = notification_table()
    if table.topic(TOPIC) is None:
        return []
    memo = session_memo(session)
    targets = memo.get(("notify", subject))
    if targets is None:
        targets = await _targets(ctx, subject, session)
        memo[("notify", subject)] = targets
    items: list[Doc] = []
    for kind, value in targets:
        if kind == "sub":
            items.append(
                NotifyStore.item(
                    "rest-hook",
                    "event-notification",
                    due=due,
                    sub=value,
                    focus=focus,
                    result=focus,
                    topic=TOPIC,
                )
            )
        else:
            items.append(
                NotifyStore.item(
                    "email", "event-notification", due=due, to=value, result=focus, topic=TOPIC
                )
            )
    await NotifyStore(ctx.store.db).enqueue(items, session)
    return items


async def _targets(
    ctx: ServerContext, subject: str, session: AsyncClientSession | None
) -> list[tuple[str, str]]:
    """Whom a result of `subject` is told to: ("sub", subscription id) and ("email", to)."""
    store = NotifyStore(ctx.store.db)
    refs = [subject]
    if await adolescent_subject(ctx, subject, session) is None:
        people = await ctx.store.find(
            {"rt": "RelatedPerson", "ix.k": f"patient={subject}"},
            {"id": 1},
            session=session,
            what="Finding whom to notify",
        )
        refs += [f"RelatedPerson/{p['id']}" for p in people]
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for ref in refs:
        who = await recipient(ctx, ref, session)
        for sub in await store.matching(TOPIC, list(who.keys), session):
            if sub["_id"] not in seen:
                seen.add(sub["_id"])
                out.append(("sub", str(sub["_id"])))
        if who.email is not None and "email:" + who.email.lower() not in seen:
            seen.add("email:" + who.email.lower())
            out.append(("email", who.email))
    return out


def workflow(settings: Settings, registry: Any) -> Workflow:
    """Build the workflow from profiles/access/release.json (fail-fast)."""
    table = load_table()
    if not table.types <= set(registry.resource_types):
        raise ValueError("release.json: 'types' names unknown resource types")

    async def before(ctx: ServerContext, req: FhirRequest, event: WriteEvent) -> Doc | None:
        new = event.new
        if new is None or event.rt not in table.types:
            return new
        now = clock.now()
        old_hold = table.hold_of(event.old) if event.old is not None else None
        has_ext = any(
            isinstance(e, dict) and e.get("url") == table.extension
            for e in new.get("extension") or []
        )
        changes_hold = (has_ext or old_hold is not None) and (
            table.hold_of(new) != old_hold or (has_ext and table.hold_of(new) is None)
        )
        if changes_hold and not set(req.policy.possible_writer_kinds()) <= HOLDERS:
            raise Forbidden("only a clinician holds or releases a result")
        check_hold(table, event.rt, new, event.old, now)
        became_released = table.released_status(event.rt, new) and (
            event.old is None or not table.released_status(event.rt, event.old)
        )
        if became_released and not has_ext:
            days = await delay_for(
                ctx, reference(new.get("subject")), table, event.rt, new, session_memo(req.session)
            )
            if days:
                ext = [
                    *(new.get("extension") or []),
                    table.hold_extension(table.patient_request_reason, now + days),
                ]
                new = {**new, "extension": ext}
        return new

    async def after(
        ctx: ServerContext,
        req: FhirRequest,
        event: WriteEvent,
        version: Version,
        session: AsyncClientSession | None,
    ) -> None:
        new = version.resource
        if new is None:
            return
        rt, rid = event.rt, version.id
        if rt == table.attachment_type:
            await _attachment_written(ctx, table, rid, new, session)
            return
        until = visible_from(table, rt, new)
        await _carry_to_attachments(ctx, table, rt, event.old, new, until, session)
        before_hold = table.hold_of(event.old) if event.old is not None else None
        after_hold = table.hold_of(new)
        if before_hold != after_hold:
            await ctx.store.hold_versions(
                rt, rid, version.vid, after_hold.expires if after_hold else None, FOREVER, session
            )
            event_doc = hold_audit(rt, rid, req, before_hold, after_hold, table)
            audit_store = ctx.store.for_type("AuditEvent")
            append = getattr(audit_store, "append", None)
            if append is not None:
                await append([event_doc])  # the audit log's own collection (no transaction)
            else:
                await audit_store.create("AuditEvent", event_doc, session=session)
        now = clock.now()
        was = visible_from(table, rt, event.old)
        if event.old is not None and (was is None or was <= now):
            return  # the patient could see it already: told before, nothing new to tell
        focus = f"{rt}/{rid}"
        notify = NotifyStore(ctx.store.db)
        if event.old is not None:
            await notify.cancel_result(focus, session)
        if until == FOREVER:
            return
        subject = reference(new.get("subject"))
        await queue_results_available(ctx, focus, subject, until or now, session)

    def view(policy: AccessPolicy, resource: Doc, stored: Any) -> None:
        if policy.release is None or "extension" not in resource:
            return
        kept = [
            e
            for e in resource.get("extension") or []
            if not (isinstance(e, dict) and e.get("url") == table.extension)
        ]
        if kept:
            resource["extension"] = kept
        else:
            resource.pop("extension", None)

    return Workflow(NAME, table.guarded_types, before=before, after=after, view=view)


async def _carry_to_attachments(
    ctx: ServerContext,
    table: ReleaseTable,
    rt: str,
    old: Doc | None,
    new: Doc,
    until: datetime | None,
    session: AsyncClientSession | None,
) -> None:
    """The Binaries a result's attachments name are hidden as long as it is; those it no
    longer names are released."""
    named = table.attachments_of(rt, new)
    before = table.attachments_of(rt, old)
    if named and (visible_from(table, rt, old) != until or set(named) != set(before)):
        await ctx.store.carry_release(table.attachment_type, named, until, session)
    dropped = [b for b in before if b not in named]
    if dropped:
        await ctx.store.carry_release(table.attachment_type, dropped, None, session)


async def _attachment_written(
    ctx: ServerContext,
    table: ReleaseTable,
    rid: str,
    binary: Doc,
    session: AsyncClientSession | None,
) -> None:
    """A Binary written after the result that names it (its `securityContext`) takes the
    result's stored release instant."""
    src = reference(binary.get("securityContext")) or ""
    src_rt, _, src_id = src.partition("/")
    if src_rt not in table.types or not src_id:
        return
    doc = await ctx.store.current(src_rt, src_id, session=session)
    if doc is None or rid not in table.attachments_of(src_rt, doc.get("res")):
        return
    until = (doc.get("ak") or {}).get("r")
    if until is not None:
        await ctx.store.carry_release(table.attachment_type, [rid], until, session)
