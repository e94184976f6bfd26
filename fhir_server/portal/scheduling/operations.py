"""The booking operations' work, framework-free (docs/portal.md, "Appointments"):
`Appointment/$find`, `$hold`, `$book`, `[id]/$cancel`, `[id]/$reschedule`, after the
Argonaut Scheduling IG (http://fhir.org/guides/argonaut/scheduling/) and IHE Scheduling.

Every write goes through the one write path (rest/interactions.py) with the caller's
policy, so the booking workflow (workflow.py) checks and completes it; each operation runs
its writes in ONE transaction of its own (db/transactions.py). A transaction that lost a
race on the Slot or the patient's claim is run once more from the start: the second run
reads what the winner committed and answers 409 naming the Slot or the Appointment.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from fhir_server.clock import now as clock_now
from fhir_server.db.transactions import own_transaction
from fhir_server.errors import BadRequest, Conflict, NotFound, PreconditionFailed
from fhir_server.portal.scheduling import rules, slots
from fhir_server.portal.scheduling.facts import refs, refuse
from fhir_server.portal.scheduling.table import SchedulingTable, load_table
from fhir_server.portal.scheduling.workflow import RT, role_of
from fhir_server.rest import interactions
from fhir_server.rest.messages import FhirRequest, FhirResponse
from fhir_server.search.execute import search_filter
from fhir_server.search.parse import parse_search
from fhir_server.storage.store import instant

if TYPE_CHECKING:
    from fhir_server.context import ServerContext

Doc = dict[str, Any]
# A loser retries while the winner's transaction may still be open (a write conflict comes
# at once, not when the winner commits): jittered backoff, doubling to about a second.
ATTEMPTS = 10
BACKOFF_S = 0.02
DEFAULT_COUNT = 50
MAX_COUNT = 500


class _Lost(Exception):
    """The transaction lost a race; run it again."""


async def _once(
    ctx: ServerContext,
    req: FhirRequest,
    work: Callable[[FhirRequest], Awaitable[FhirResponse]],
    precheck: Callable[[], Awaitable[None]] | None = None,
) -> FhirResponse:
    """`work` in one transaction; a lost race is run again (the rerun answers 409)."""
    for attempt in range(ATTEMPTS):
        if precheck is not None and req.session is None:
            await precheck()  # a loser whose winner committed stops at one read
        sub = FhirRequest(
            method="POST",
            path=list(req.path),
            headers={},
            policy=req.policy,
            session=req.session,
            in_bundle=req.in_bundle,
        )
        try:
            async with own_transaction(ctx.store.client, sub, _Lost):
                return await work(sub)
        except (_Lost, PreconditionFailed):
            if req.session is not None:
                raise
            await asyncio.sleep(random.uniform(0, BACKOFF_S * 2 ** min(attempt, 6)))
    raise Conflict("the Slot is being booked by many requests at once; choose another slot")


def _sub(
    req: FhirRequest, method: str, path: list[str], body: Doc, if_match: str | None = None
) -> FhirRequest:
    return FhirRequest(
        method=method,
        path=path,
        headers={"if-match": if_match} if if_match else {},
        body=body,
        session=req.session,
        in_bundle=req.in_bundle,
        policy=req.policy,
    )


async def _write(ctx: ServerContext, req: FhirRequest, appt: Doc) -> FhirResponse:
    """Create `appt`, or update it when it names a stored Appointment the caller sees."""
    rid = appt.get("id")
    if isinstance(rid, str) and rid:
        current = await interactions.read_visible(ctx, req, RT, rid)
        return await interactions.update(
            ctx, _sub(req, "PUT", [RT, rid], appt, current.etag), RT, rid
        )
    return await interactions.create(ctx, _sub(req, "POST", [RT], appt), RT)


def _input(value: Any) -> Doc:
    if not isinstance(value, dict) or value.get("resourceType") != RT:
        raise BadRequest("the parameter 'appointment' must be an Appointment", code="required")
    return {k: v for k, v in value.items() if k != "meta" or (v or {}).get("security")}


async def _fail_fast(ctx: ServerContext, appt: Doc) -> None:
    """A Slot already taken answers 409 before any transaction opens: under contention the
    losers then stop at one read. Only an optimisation: the conditional write in the
    workflow's transaction still settles every race (a Slot free here may be gone there)."""
    table = load_table()
    now = clock_now()
    for ref in refs(appt.get("slot")):
        if not ref.startswith("Slot/"):
            continue
        doc = await ctx.store.current("Slot", ref.split("/", 1)[1])
        if doc is not None:
            state = slots.effective_status(table, doc["res"], now)
            if state in slots.TAKEN:
                raise Conflict(f"{ref} is not free (it is {state}); choose another slot")


async def hold(ctx: ServerContext, req: FhirRequest, appointment: Any) -> FhirResponse:
    """`$hold`: the Appointment becomes `pending` and its Slot `busy-tentative` for the
    visit type's hold time, for this patient."""
    appt = {**_input(appointment), "status": "pending"}
    return await _once(ctx, req, lambda r: _write(ctx, r, appt), lambda: _fail_fast(ctx, appt))


async def book(ctx: ServerContext, req: FhirRequest, appointment: Any) -> FhirResponse:
    """`$book`: the proposed, held or requested Appointment becomes `booked` and its Slot
    `busy`, in one transaction."""
    appt = {**_input(appointment), "status": "booked"}
    return await _once(ctx, req, lambda r: _write(ctx, r, appt), lambda: _fail_fast(ctx, appt))


def _cancelled(res: Doc, reason: str | None) -> Doc:
    out = {k: v for k, v in res.items() if k != "meta"}
    if (res.get("meta") or {}).get("security"):
        out["meta"] = {"security": res["meta"]["security"]}
    out["status"] = "cancelled"
    if reason:
        out["cancelationReason"] = {"text": reason}
    return out


async def _cancel_in(
    ctx: ServerContext, req: FhirRequest, rid: str, reason: str | None
) -> FhirResponse:
    current = await interactions.read_visible(ctx, req, RT, rid)
    res = current.resource
    assert res is not None
    if res.get("status") not in {"booked", "pending", "proposed"}:
        raise refuse(
            f"{RT}/{rid} is {res.get('status')}: only a booked, held or requested one is cancelled"
        )
    return await interactions.update(
        ctx, _sub(req, "PUT", [RT, rid], _cancelled(res, reason), current.etag), RT, rid
    )


async def cancel(
    ctx: ServerContext, req: FhirRequest, rid: str, reason: str | None
) -> FhirResponse:
    """`[id]/$cancel`: cancelled; its Slot freed and its clipboard Task cancelled in the same
    transaction. On a request, the patient withdraws it, or the team declines it (reason)."""
    return await _once(ctx, req, lambda r: _cancel_in(ctx, r, rid, reason))


# A test hook: the step between the two halves of `$reschedule` (tests make it fail).
between_halves: Callable[[], Awaitable[None]] | None = None


async def reschedule(
    ctx: ServerContext, req: FhirRequest, rid: str, appointment: Any, reason: str | None
) -> FhirResponse:
    """`[id]/$reschedule`: the old booking cancelled and the new one booked in ONE
    transaction: a failure of either leaves the old booking as it was."""
    new = {**_input(appointment), "status": "booked"}
    if new.get("id") == rid:
        raise BadRequest("$reschedule books a new Appointment: leave out the old one's id")

    async def work(r: FhirRequest) -> FhirResponse:
        await _cancel_in(ctx, r, rid, reason or "rescheduled")
        if between_halves is not None:
            await between_halves()
        return await _write(ctx, r, new)

    return await _once(ctx, req, work)


# -- $find ------------------------------------------------------------------------------


def _date(value: str | None, default: datetime) -> datetime:
    if not value:
        return default
    t = slots.parse_instant(value if len(value) > 10 else value + "T00:00:00+00:00")
    if t is None:
        raise BadRequest(f"{value!r} is not a date or an instant with a time zone")
    return t


async def find(
    ctx: ServerContext,
    req: FhirRequest,
    patient: str | None,
    service_types: list[str],
    location: str | None,
    start: str | None,
    end: str | None,
    count: int | None,
) -> FhirResponse:
    """`$find`: a searchset of `proposed` Appointments, one per free Slot that the table lets
    this caller book for this patient (soonest first)."""
    table = load_table()
    if not patient:
        raise BadRequest("$find needs the parameter 'patient'", code="required")
    pid = patient.removeprefix("Patient/")
    interactions.check_id(pid)
    subject = f"Patient/{pid}"
    if (
        await ctx.store.find_visible(
            "Patient", pid, req.policy.read_filter("Patient"), session=req.session
        )
        is None
    ):
        raise NotFound(f"{subject} is not known")
    role, kinds = role_of(table, req.policy, subject)
    now = clock_now()
    clinics = table.clinics
    if location:
        clinic = table.clinic(location)
        if clinic is None:
            raise refuse(f"{location} is not a clinic that books through the portal")
        clinics = (clinic,)
    codes = [s.split("|", 1)[-1] for s in service_types for s in s.split(",") if s]
    horizon = max(v.horizon for c in clinics for v in c.visit_types)
    t0 = max(_date(start, now), now)
    t1 = _date(end, now + horizon)
    limit = min(count or DEFAULT_COUNT, MAX_COUNT)
    from fhir_server.access.family import age_on

    pdoc = await ctx.store.current("Patient", pid, session=req.session)
    age = age_on((pdoc or {}).get("res", {}).get("birthDate"), now.date())
    found = await free_slots(ctx, table, clinics, codes, t0, t1)
    entries: list[Doc] = []
    for clinic, schedule, slot in found:
        for code in table.codes_of(slot.get("serviceType")):
            vt = clinic.visit_type(code)
            if vt is None or (codes and code not in codes):
                continue
            st = slots.parse_instant(slot.get("start"))
            if role == "never" or st is None:
                continue
            if role == "patient" and rules.booking_refused(vt, kinds, age, st, now):
                continue
            entries.append(_proposed(table, vt, subject, schedule, slot))
            break
        if len(entries) >= limit:
            break
    base = ctx.base_url
    return FhirResponse(
        status=200,
        body={
            "resourceType": "Bundle",
            "id": str(uuid.uuid4()),
            "type": "searchset",
            "total": len(entries),
            "link": [{"relation": "self", "url": f"{base}/{RT}/$find?patient={pid}"}],
            "entry": [
                {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": e, "search": {"mode": "match"}}
                for e in entries
            ],
        },
    )


async def free_slots(
    ctx: ServerContext,
    table: SchedulingTable,
    clinics: tuple[Any, ...],
    codes: list[str],
    t0: datetime,
    t1: datetime,
) -> list[tuple[Any, Doc, Doc]]:
    """(clinic, Schedule, Slot) of the Slots free at `clock_now()` between `t0` and `t1` at
    `clinics`, soonest first: two indexed searches (the Schedules of the clinics'
    Locations, then their free or held Slots in the window); an expired hold is free."""
    locations = sorted(loc for c in clinics for loc in c.locations)
    reg = ctx.registry
    sreq = parse_search("Schedule", [("actor", ",".join(locations)), ("active", "true")], reg)
    schedules = await ctx.store.find(await search_filter(ctx.store, reg, sreq), {"id": 1, "res": 1})
    if not schedules:
        return []
    by_ref = {f"Schedule/{d['id']}": d["res"] for d in schedules}
    params = [
        ("schedule", ",".join(sorted(by_ref))),
        ("status", "free,busy-tentative"),
        ("start", f"ge{instant(t0)}"),
        ("start", f"le{instant(t1)}"),
    ]
    if codes:
        params.append(("service-type", ",".join(f"{table.system}|{c}" for c in codes)))
    sreq = parse_search("Slot", params, reg)
    docs = await ctx.store.find(await search_filter(ctx.store, reg, sreq), {"id": 1, "res": 1})
    now = clock_now()
    out = []
    for d in docs:
        slot = d["res"]
        if slots.effective_status(table, slot, now) != "free":
            continue
        sched = by_ref.get(str((slot.get("schedule") or {}).get("reference")))
        loc = next(
            (
                a["reference"]
                for a in (sched or {}).get("actor") or ()
                if str(a.get("reference", "")).startswith("Location/")
            ),
            None,
        )
        clinic = table.clinic_of_location(loc) if loc else None
        if sched is not None and clinic is not None:
            out.append((clinic, sched, slot))
    out.sort(key=lambda t: str(t[2].get("start")))
    return out


def _proposed(table: SchedulingTable, vt: Any, patient: str, schedule: Doc, slot: Doc) -> Doc:
    st, en = slots.parse_instant(slot.get("start")), slots.parse_instant(slot.get("end"))
    participants: list[Doc] = [
        {"actor": {"reference": patient}, "required": "required", "status": "needs-action"}
    ]
    for a in schedule.get("actor") or ():
        ref = a.get("reference")
        if isinstance(ref, str):
            participants.append({"actor": dict(a), "required": "required", "status": "accepted"})
    out: Doc = {
        "resourceType": RT,
        "status": "proposed",
        "serviceType": [table.concept(vt)],
        "start": slot.get("start"),
        "end": slot.get("end"),
        "slot": [{"reference": f"Slot/{slot['id']}"}],
        "participant": participants,
    }
    if st and en:
        out["minutesDuration"] = int((en - st) / timedelta(minutes=1))
    return out
