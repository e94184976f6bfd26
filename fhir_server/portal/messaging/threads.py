"""The thread rules on every Communication a user token writes (portal/hooks.py `before`).

A thread is a header Communication (no `partOf`, no payload, `status` the table's open
status, `topic.text`, a coded `category`, `subject` the patient, `recipient` the team or
pool) and its messages (`partOf` the header, a payload, replies `inResponseTo` a message of
the same thread). The server sets `sent` and `sender` from the token; the write rules
(profiles/access/writes.json) already made `sender` name the caller, and this step makes it
the caller *for this patient* (a parent's RelatedPerson for the child). Recipients come from
profiles/portal/messaging.json. Any refusal is 422 `business-rule` naming the element, and
nothing is stored. See docs/portal.md, "Secure messaging";
https://hl7.org/fhir/R4/communication.html.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fhir_server.access import writes
from fhir_server.access.family import reference
from fhir_server.errors import Forbidden, Issue, Unprocessable
from fhir_server.portal.messaging import people
from fhir_server.portal.messaging.table import MessagingTable
from fhir_server.storage.store import instant, now_utc

if TYPE_CHECKING:
    from fhir_server.context import ServerContext
    from fhir_server.portal.hooks import WriteEvent
    from fhir_server.rest.messages import FhirRequest

Doc = dict[str, Any]
RT = "Communication"


def refuse(reason: str, element: str) -> Unprocessable:
    path = f"{RT}.{element}"
    return Unprocessable(
        f"{path}: {reason}",
        code="business-rule",
        issues=[Issue("business-rule", f"{path}: {reason}", expression=(path,))],
    )


def governed(req: FhirRequest) -> bool:
    """User tokens follow the rules; the organisation's systems and an auth-less server
    (development, imports) store messages as they are."""
    auth = req.policy.auth
    return auth is not None and not auth.is_system and auth.fhir_user is not None


def refs(node: Any) -> list[str]:
    items = node if isinstance(node, list) else [node] if node is not None else []
    return [r for r in (reference(x) for x in items) if r]


def written_refs(new: Doc, element: str) -> list[str]:
    """The references a client wrote in `element`, each entry a literal reference: an entry
    naming its target only by `identifier` or `display` is one the rules cannot check (and
    a `recipient:identifier` search would route it), so it is refused, not skipped."""
    node = new.get(element)
    items = node if isinstance(node, list) else [node] if node is not None else []
    out = []
    for i, item in enumerate(items):
        ref = reference(item)
        if not ref:
            raise refuse("names its target by a reference (Type/id)", f"{element}[{i}]")
        out.append(ref)
    return out


async def before(
    table: MessagingTable, ctx: ServerContext, req: FhirRequest, event: WriteEvent
) -> Doc | None:
    new = event.new
    if new is None or not governed(req):
        return new
    who = await people.caller(ctx, req)
    if event.old is None:
        return await _create(table, ctx, req, who, new)
    return await _change(table, ctx, req, who, event.old, new)


# --- create ---------------------------------------------------------------------------


async def _create(
    table: MessagingTable, ctx: ServerContext, req: FhirRequest, who: people.Caller, new: Doc
) -> Doc:
    subject = reference(new.get("subject"))
    if subject is None or not subject.startswith("Patient/"):
        raise refuse("a message names the patient it is about (a Patient)", "subject")
    if who.clinician and subject not in who.patients:
        # Answered alike for any patient off the caller's teams, known or not.
        raise refuse(
            "a clinician writes in the threads of the patients of its care teams", "subject"
        )
    new = {**new, "sender": {"reference": await _sender(ctx, req, who, new, subject)}}
    # The server's clock, not the client's: response times are counted from it.
    new["sent"] = instant(now_utc())
    new.pop(table.read_element, None)
    if not new.get("partOf"):
        await _check_header(table, ctx, req, who, new, subject)
        return new
    return await _check_message(table, ctx, req, who, new, subject)


async def _sender(
    ctx: ServerContext, req: FhirRequest, who: people.Caller, new: Doc, subject: str
) -> str:
    given = reference(new.get("sender"))
    if who.clinician:
        # The write rules checked it names the practitioner or one of its roles.
        if given is None or given not in who.identities:
            raise refuse("must name the user of this access token", "sender")
        return given
    expected = await people.sender_for(ctx, req, who, subject)
    if expected is None:
        raise refuse("this access token writes for no one in this patient's record", "sender")
    # Left out, the write rules filled in the user itself: for a proxy that is the
    # RelatedPerson standing for the user towards this patient.
    if given not in (None, who.user, expected):
        raise refuse(f"must name the user of this access token ({expected})", "sender")
    return expected


async def _check_header(
    table: MessagingTable,
    ctx: ServerContext,
    req: FhirRequest,
    who: people.Caller,
    new: Doc,
    subject: str,
) -> None:
    if new.get("payload"):
        raise refuse(
            "a thread header carries no payload: create the header, then the message with "
            "partOf the header",
            "payload",
        )
    if new.get("status") != table.open_status:
        raise refuse(f"a new thread's status is {table.open_status!r}", "status")
    topic = new.get("topic")
    if not (isinstance(topic, dict) and isinstance(topic.get("text"), str) and topic["text"]):
        raise refuse("a thread has a topic (topic.text)", "topic")
    if table.category_of(new) is None:
        codes = ", ".join(sorted(table.categories))
        raise refuse(f"a thread's category is one of {table.category_system}: {codes}", "category")
    recipients = written_refs(new, "recipient")
    if not recipients:
        raise refuse("a thread names its recipient (the care team or the nurse pool)", "recipient")
    await _check_recipients(table, ctx, req, who, new, subject, recipients, thread=None)


async def _visible(ctx: ServerContext, req: FhirRequest, ref: str) -> Doc | None:
    """The Communication `ref` if the caller may read it (hidden answers as missing)."""
    rt, _, rid = ref.partition("/")
    if rt != RT or not rid:
        return None
    doc = await ctx.store.find_visible(RT, rid, req.policy.read_filter(RT), session=req.session)
    res = (doc or {}).get("res")
    return res if isinstance(res, dict) else None


async def _check_message(
    table: MessagingTable,
    ctx: ServerContext,
    req: FhirRequest,
    who: people.Caller,
    new: Doc,
    subject: str,
) -> Doc:
    part_of = written_refs(new, "partOf")
    if len(part_of) != 1:
        raise refuse("a message is part of exactly one thread (its header)", "partOf")
    header = await _visible(ctx, req, part_of[0])
    if header is None or header.get("partOf") or reference(header.get("subject")) != subject:
        raise refuse(
            f"{part_of[0]} is not a thread of this patient that this access token may write in",
            "partOf",
        )
    if header.get("status") in table.closed_statuses:
        raise refuse(f"the thread {part_of[0]} is closed ({header.get('status')})", "partOf")
    if not new.get("payload"):
        raise refuse("a message carries a payload", "payload")
    if new.get("status") not in table.message_statuses:
        raise refuse(f"a message's status is one of {sorted(table.message_statuses)}", "status")
    answered: list[Doc] = []
    for i, ref in enumerate(written_refs(new, "inResponseTo")):
        m = await _visible(ctx, req, ref)
        if m is None or part_of[0] not in refs(m.get("partOf")):
            raise refuse(f"{ref} is not a message of the thread {part_of[0]}", f"inResponseTo[{i}]")
        answered.append(m)
    recipients = written_refs(new, "recipient")
    if not recipients:
        # Left out: a patient writes to the thread's recipients; a clinician answers the one
        # who wrote the message answered, or the patient.
        if who.clinician:
            first = reference(answered[0].get("sender")) if answered else None
            recipients = [first or subject]
        else:
            recipients = refs(header.get("recipient"))
        new = {**new, "recipient": [{"reference": r} for r in recipients]}
    await _check_recipients(table, ctx, req, who, new, subject, recipients, thread=part_of[0])
    return new


async def _check_recipients(
    table: MessagingTable,
    ctx: ServerContext,
    req: FhirRequest,
    who: people.Caller,
    new: Doc,
    subject: str,
    recipients: list[str],
    *,
    thread: str | None,
) -> None:
    allowed = {people.ref_of(r) for r in await people.patient_recipients(ctx, req, subject)}
    if who.clinician:
        if not table.clinician_care_teams:
            allowed = set()
        if table.clinician_subject:
            allowed.add(subject)
        if table.clinician_thread_senders and thread is not None:
            allowed |= await _thread_senders(ctx, req, thread, subject)
    for i, r in enumerate(recipients):
        if r not in allowed:
            hint = (
                ""
                if who.clinician
                else f" (GET Communication/$recipients?patient={subject.split('/', 1)[1]})"
            )
            raise refuse(
                f"{r} is not one of the recipients this access token may write to about "
                f"{subject}{hint}",
                f"recipient[{i}]",
            )


async def _thread_senders(
    ctx: ServerContext, req: FhirRequest, thread: str, subject: str
) -> set[str]:
    """The RelatedPersons of `subject` who wrote in the thread (a parent for a child): a
    clinician may answer them there."""
    docs = await ctx.store.find(
        {"rt": RT, "ix.k": f"part-of={thread}", "comp": subject},
        {"res.sender": 1},
        session=req.session,
        what="The thread",
    )
    out = set()
    for d in docs:
        ref = reference((d.get("res") or {}).get("sender"))
        if ref and ref.startswith("RelatedPerson/"):
            out.add(ref)
    return out


# --- update and patch -----------------------------------------------------------------


async def _change(
    table: MessagingTable,
    ctx: ServerContext,
    req: FhirRequest,
    who: people.Caller,
    old: Doc,
    new: Doc,
) -> Doc:
    if "sent" in old and "sent" not in new:
        new = {**new, "sent": old["sent"]}  # the server's, kept whatever the client sends
    changed = writes.changed_elements(old, new)
    read = table.read_element
    if read in changed:
        if old.get(read) is not None:
            raise refuse("is set once, when a recipient first reads the message", read)
        if new.get(read) is None:
            raise refuse("is set by a recipient reading the message", read)
        if not await is_recipient(ctx, req, who, old):
            raise Forbidden(f"only a recipient of {RT}/{old.get('id')} marks it read")
    for element in table.fixed:
        if element in changed:
            raise refuse("does not change once the message is stored", element)
    if "status" in changed:
        await _check_status(table, ctx, req, who, old, new)
    return new


async def _check_status(
    table: MessagingTable,
    ctx: ServerContext,
    req: FhirRequest,
    who: people.Caller,
    old: Doc,
    new: Doc,
) -> None:
    """A thread is closed (or reopened) by whoever started it or one of its recipients; a
    message's status is its sender's. The write rules let a recipient's status change
    through unbound (writes.json, bound.recipient_changes), so the sender is checked here."""
    sender = reference(old.get("sender"))
    by_sender = sender is not None and sender in who.identities
    if old.get("partOf"):
        if not by_sender:
            raise Forbidden(f"only the sender of {RT}/{old.get('id')} changes its status")
        return
    if new.get("status") not in {table.open_status, *table.closed_statuses}:
        statuses = sorted({table.open_status, *table.closed_statuses})
        raise refuse(f"a thread's status is one of {statuses}", "status")
    if not by_sender and not await is_recipient(ctx, req, who, old):
        raise Forbidden(f"only a participant of the thread {RT}/{old.get('id')} closes it")


async def is_recipient(ctx: ServerContext, req: FhirRequest, who: people.Caller, msg: Doc) -> bool:
    """Whether the caller stands for one of the message's recipients: itself (or its roles),
    a team or pool it belongs to, a RelatedPerson it is, or a patient it may write for."""
    for r in refs(msg.get("recipient")):
        if r in who.identities or r in who.teams:
            return True
        if (
            not who.clinician
            and r.startswith("Patient/")
            and people.may_write_messages_for(req, ctx, r)
        ):
            return True
    return False
