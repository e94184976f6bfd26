"""The booking workflow on the one write path (portal/hooks.py): every Appointment write,
a plain POST/PUT as much as `$hold`, `$book`, `$cancel` and `$reschedule`, obeys it.

`before` (on what would be stored): a booking (status to `booked`) or a hold (`pending`)
is checked against the table for a patient or proxy (visit type online, lead time, horizon,
ages, a parent of an adolescent only for the listed types) and completed from its Slots; a
request (`proposed` with `requestedPeriod`, no Slot) needs a reason and a clinic; a patient
never moves a booked Appointment by editing it (`$reschedule` does); the scheduling team
declines a request with a reason (`cancelationReason`).

`after` (in the write's transaction): the Slot is claimed by a conditional write on the
version read in the transaction (`busy`, or `busy-tentative` with the hold's expiry), so of
two bookings of one Slot exactly one commits; a per-patient claim document serialises one
patient's bookings, so two overlapping ones cannot both commit; the overlap with another
booked Appointment of the patient is refused (409 naming it); the clipboard Task (the
contract in docs/portal.md) and the request Task are written and the notifications queued.
A cancelled booking or hold frees its Slot and cancels its open clipboard Task.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pymongo.asynchronous.client_session import AsyncClientSession

from fhir_server.clock import now as clock_now
from fhir_server.config import Settings
from fhir_server.errors import Conflict, FhirError, Forbidden
from fhir_server.portal.hooks import Workflow, WriteEvent
from fhir_server.portal.scheduling import notices, rules, slots
from fhir_server.portal.scheduling.facts import (
    Facts,
    completed,
    facts_of,
    patient_of,
    refs,
    refuse,
)
from fhir_server.portal.scheduling.table import SchedulingTable, load_table
from fhir_server.search import effective
from fhir_server.search.execute import search_filter
from fhir_server.search.parse import parse_search
from fhir_server.storage.store import instant

if TYPE_CHECKING:
    from fhir_server.access.policy import AccessPolicy
    from fhir_server.context import ServerContext
    from fhir_server.rest.messages import FhirRequest
    from fhir_server.storage.store import Version

Doc = dict[str, Any]
RT = "Appointment"
# One document per patient, moved on by every booking of that patient in its transaction:
# two concurrent bookings of one patient write the same document, so one of them fails.
PATIENT_CLAIMS = "scheduling_patients"
TAKES_SLOT = frozenset({"booked", "pending"})
FREES_SLOT = frozenset({"cancelled", "entered-in-error"})
# Elements a patient may not edit on a booked Appointment ($reschedule moves it).
FIXED = ("slot", "start", "end", "serviceType", "participant")


def role_of(
    table: SchedulingTable, policy: AccessPolicy, patient: str | None
) -> tuple[str, tuple[str, ...]]:
    kinds = policy.writer_kinds([patient] if patient else [])
    return rules.role(table, kinds), kinds


def never_books() -> Forbidden:
    return Forbidden("this login may read appointments but not book, hold, request or cancel them")


async def _before(
    ctx: ServerContext, req: FhirRequest, event: WriteEvent, table: SchedulingTable
) -> Doc | None:
    new, old = event.new, event.old
    if new is None:
        return new
    to, was = new.get("status"), (old or {}).get("status")
    patient = patient_of(new)
    role, kinds = role_of(table, req.policy, patient)
    if role == "never":
        raise never_books()
    if role == "patient" and old is not None and was == "booked" and to == "booked":
        moved = [k for k in FIXED if old.get(k) != new.get(k)]
        if moved:
            raise refuse(
                f"a booked Appointment is moved with $reschedule, not by editing {moved[0]}",
                expression=f"Appointment.{moved[0]}",
            )
    if to in TAKES_SLOT and was != to:
        f = await facts_of(
            ctx,
            table,
            new,
            req.session,
            need_slot=role == "patient" or to == "pending" or bool(new.get("slot")),
        )
        if role == "patient" and f.start is not None:
            why = rules.booking_refused(f.visit_type, kinds, f.age, f.start, clock_now())
            if why:
                raise refuse(why)
        return completed(table, new, f, str(to)) if f.slots else new
    if to == "proposed" and old is None and (new.get("slot") or new.get("requestedPeriod")):
        # A request names a period; a proposed Appointment with neither a Slot nor a period
        # is a draft the patient keeps (no Task: docs/portal.md, "Requests").
        if new.get("slot"):
            raise refuse(
                "a proposed Appointment with a Slot is what $find answers: $hold or $book it; "
                "a request names no Slot",
                expression="Appointment.slot",
            )
        if not (
            new.get("reasonCode")
            or new.get("reasonReference")
            or new.get("comment")
            or new.get("description")
        ):
            raise refuse(
                "an appointment request needs a reason (reasonCode or comment)",
                expression="Appointment.reasonCode",
            )
        f = await facts_of(ctx, table, new, req.session, need_slot=False)
        if role == "patient":
            why = rules.who_refused(f.visit_type, kinds, f.age)
            if why:
                raise refuse(why)
        return completed(table, new, f, "proposed")
    if (
        to == "cancelled"
        and was == "proposed"
        and role == "staff"
        and not new.get("cancelationReason")
    ):
        raise refuse(
            "declining a request needs a reason (cancelationReason)",
            expression="Appointment.cancelationReason",
        )
    return new


async def claim_patient(
    ctx: ServerContext, patient: str, session: AsyncClientSession | None
) -> None:
    await ctx.store.db[PATIENT_CLAIMS].update_one(
        {"_id": patient}, {"$inc": {"n": 1}}, upsert=True, session=session
    )


async def _search(
    ctx: ServerContext, rt: str, params: list[tuple[str, str]], session: AsyncClientSession | None
) -> list[Doc]:
    sreq = parse_search(rt, params, ctx.registry)
    return await ctx.store.find(
        await search_filter(ctx.store, ctx.registry, sreq), None, session=session
    )


async def _claim_slots(
    ctx: ServerContext,
    table: SchedulingTable,
    f: Facts,
    appt_ref: str,
    status: str,
    session: AsyncClientSession | None,
) -> None:
    now = clock_now()
    for doc in f.slots:
        # Read again in this transaction: the conditional write below is on this version.
        cur = await ctx.store.current("Slot", doc["id"], session=session)
        assert cur is not None
        slot, name = cur["res"], f"Slot/{cur['id']}"
        state = slots.effective_status(table, slot, now)
        if state == "busy-tentative":
            holder = slots.live_hold(table, slot, now)
            if holder != appt_ref and not await _same_patient(ctx, holder, f.patient, session):
                raise Conflict(f"{name} is held by another booking; choose another slot")
        elif state != "free":
            raise Conflict(f"{name} is not free (it is {state}); choose another slot")
        if status == "pending":
            new = slots.held(table, slot, appt_ref, now + f.visit_type.hold)
        else:
            new = slots.with_status(table, slot, "busy")
        await ctx.store.update("Slot", cur["id"], new, if_match=int(cur["vid"]), session=session)


async def _same_patient(
    ctx: ServerContext, holder: str | None, patient: str, session: AsyncClientSession | None
) -> bool:
    if not holder or not holder.startswith("Appointment/"):
        return False
    doc = await ctx.store.current(RT, holder.split("/", 1)[1], session=session)
    return doc is not None and patient_of(doc["res"]) == patient


async def _overlap(
    ctx: ServerContext, f: Facts, appt_id: str, session: AsyncClientSession | None
) -> None:
    if f.start is None or f.end is None:
        return
    since = instant(f.start - timedelta(days=1))
    for doc in await _search(
        ctx,
        RT,
        [
            ("patient", f.patient),
            ("status", "booked"),
            ("date", f"lt{instant(f.end)}"),
            ("date", f"ge{since}"),
        ],
        session,
    ):
        other = doc["res"]
        end = slots.parse_instant(other.get("end"))
        if doc["id"] != appt_id and end is not None and end > f.start:
            raise Conflict(f"the patient already has Appointment/{doc['id']} at that time")


async def _open_tasks(
    ctx: ServerContext, rule: Any, appt_ref: str, by: str, session: AsyncClientSession | None
) -> list[Doc]:
    docs = await _search(ctx, "Task", [(by, appt_ref)], session)
    return [
        d for d in docs if rule.matches(d["res"]) and d["res"].get("status") in rule.open_statuses
    ]


def _task(code: Doc, **fields: Any) -> Doc:
    return {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "code": {"coding": [code], "text": code.get("display", code["code"])},
        "authoredOn": instant(clock_now()),
        **fields,
    }


def _labels(appt: Doc) -> Doc:
    security = (appt.get("meta") or {}).get("security")
    return {"meta": {"security": security}} if security else {}


def clipboard_task(table: SchedulingTable, appt: Doc, f: Facts) -> Doc | None:
    """The clipboard Task of the contract (docs/portal.md, "Pre-visit clipboards")."""
    if f.visit_type.clipboard is None:
        return None
    return _task(
        table.clipboard_task.code,
        **_labels(appt),
        description=f"Complete the pre-visit questionnaire before your {f.visit_type.display.lower()}",
        focus={"reference": f.visit_type.clipboard},
        basedOn=[{"reference": f"{RT}/{appt['id']}"}],
        executionPeriod={"end": appt.get("start") or f.start_text},
        owner={"reference": f.patient},
        **{"for": {"reference": f.patient}},
    )


def request_task(table: SchedulingTable, appt: Doc, f: Facts, requester: str | None) -> Doc:
    period = (appt.get("requestedPeriod") or [{}])[0]
    extra: Doc = {"requester": {"reference": requester}} if requester else {}
    return _task(
        table.request_task.code,
        **_labels(appt),
        **extra,
        description=f"Appointment request: {f.visit_type.display}",
        focus={"reference": f"{RT}/{appt['id']}"},
        owner={"reference": f.clinic.scheduling_team},
        restriction={"period": period},
        **{"for": {"reference": f.patient}},
    )


async def _close(
    ctx: ServerContext,
    docs: list[Doc],
    status: str,
    session: AsyncClientSession | None,
    **fields: Any,
) -> None:
    for d in docs:
        res = {k: v for k, v in d["res"].items() if k != "meta"}
        if (d["res"].get("meta") or {}).get("security"):
            res["meta"] = {"security": d["res"]["meta"]["security"]}
        res.update(status=status, **fields)
        ctx.validator.validate(res)
        await ctx.store.update("Task", d["id"], res, if_match=int(d["vid"]), session=session)


async def _after(
    ctx: ServerContext,
    req: FhirRequest,
    event: WriteEvent,
    version: Version,
    session: AsyncClientSession | None,
    table: SchedulingTable,
) -> None:
    new, old = version.resource, event.old
    if new is None:
        return
    to, was = new.get("status"), (old or {}).get("status")
    appt_ref = f"{RT}/{version.id}"
    patient = patient_of(new)
    if patient is None:
        return
    if to in TAKES_SLOT and was != to and new.get("slot"):
        await claim_patient(ctx, patient, session)
        f = await facts_of(ctx, table, new, session, need_slot=True)
        await _claim_slots(ctx, table, f, appt_ref, str(to), session)
        if to != "booked":
            return
        await _overlap(ctx, f, version.id, session)
        task = clipboard_task(table, new, f)
        if task is not None:
            ctx.validator.validate(task)
            await ctx.store.create("Task", task, session=session)
        if was == "proposed":
            answered = await _open_tasks(ctx, table.request_task, appt_ref, "focus", session)
            await _close(
                ctx,
                answered,
                "completed",
                session,
                output=[{"type": {"text": "booked"}, "valueReference": {"reference": appt_ref}}],
            )
            await notices.notify(ctx, notices.ANSWERED, patient, None, appt_ref, session)
        await notices.notify(
            ctx, notices.BOOKED, patient, f.clinic.scheduling_team, appt_ref, session
        )
        return
    if to in FREES_SLOT and was in TAKES_SLOT:
        now = clock_now()
        for ref in refs(new.get("slot")):
            cur = await ctx.store.current("Slot", ref.split("/", 1)[1], session=session)
            if cur is None:
                continue
            slot = cur["res"]
            ours = (
                slot.get("status") == "busy"
                if was == "booked"
                else slots.live_hold(table, slot, now) == appt_ref
            )
            if ours:
                await ctx.store.update(
                    "Slot",
                    cur["id"],
                    slots.with_status(table, slot, "free"),
                    if_match=int(cur["vid"]),
                    session=session,
                )
        clip = await _open_tasks(ctx, table.clipboard_task, appt_ref, "based-on", session)
        await _close(
            ctx, clip, "cancelled", session, statusReason={"text": "appointment cancelled"}
        )
        if was == "booked":
            team = None
            try:
                team = (
                    await facts_of(ctx, table, new, session, need_slot=True)
                ).clinic.scheduling_team
            except FhirError:
                team = None  # a Slot no longer at a clinic of the table still cancels
            await notices.notify(ctx, notices.CANCELLED, patient, team, appt_ref, session)
        return
    if to == "proposed" and old is None and new.get("requestedPeriod"):
        f = await facts_of(ctx, table, new, session, need_slot=False)
        requester = req.policy.auth.fhir_user if req.policy.auth is not None else None
        task = request_task(table, new, f, requester)
        ctx.validator.validate(task)
        await ctx.store.create("Task", task, session=session)
        await notices.notify(
            ctx, notices.TEAM, patient, f.clinic.scheduling_team, appt_ref, session
        )
        return
    if to == "cancelled" and was == "proposed":
        role, _ = role_of(table, req.policy, patient)
        open_ = await _open_tasks(ctx, table.request_task, appt_ref, "focus", session)
        reason = new.get("cancelationReason") or {"text": "withdrawn by the patient"}
        status = "rejected" if role == "staff" else "cancelled"
        await _close(ctx, open_, status, session, statusReason=reason)
        if role == "staff":
            await notices.notify(ctx, notices.ANSWERED, patient, None, appt_ref, session)


def view(table: SchedulingTable) -> Any:
    def shape(policy: AccessPolicy, resource: Doc, stored: Any) -> None:
        if resource.get("resourceType") == "Slot":
            staff = (
                not policy.restricted
                or rules.role(table, policy.possible_writer_kinds()) == "staff"
            )
            slots.shown(table, resource, clock_now(), staff)

    return shape


def workflow(settings: Settings, registry: Any) -> Workflow:
    """The booking workflow; a malformed table stops start-up here."""
    table = load_table()
    # Slot status searches answer by the status as read (an expired hold is free).
    effective.register(slots.RT, slots.STATUS_PARAM, slots.status_filter)

    async def before(ctx: ServerContext, req: FhirRequest, event: WriteEvent) -> Doc | None:
        if event.rt != RT:
            return event.new
        return await _before(ctx, req, event, table)

    async def after(
        ctx: ServerContext,
        req: FhirRequest,
        event: WriteEvent,
        version: Version,
        session: AsyncClientSession | None,
    ) -> None:
        if event.rt == RT:
            await _after(ctx, req, event, version, session, table)

    return Workflow(
        "scheduling", frozenset({RT, slots.RT}), before=before, after=after, view=view(table)
    )
