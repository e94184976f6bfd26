"""What a booking is about, read from the data: the Slots it names, their Schedule's
practitioner and Location, the clinic of the table that Location belongs to, the visit type,
the patient and the patient's age. Server-side lookups (no policy: the caller is shown
nothing of them but the refusal reasons, which name only directory data).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pymongo.asynchronous.client_session import AsyncClientSession

from fhir_server.access.family import age_on
from fhir_server.clock import now as clock_now
from fhir_server.errors import Unprocessable
from fhir_server.portal.scheduling.slots import parse_instant
from fhir_server.portal.scheduling.table import Clinic, SchedulingTable, VisitType

if TYPE_CHECKING:
    from fhir_server.context import ServerContext

Doc = dict[str, Any]


def refuse(reason: str, *, expression: str | None = None) -> Unprocessable:
    from fhir_server.errors import Issue

    issue = Issue(
        code="business-rule", diagnostics=reason, expression=(expression,) if expression else ()
    )
    return Unprocessable(reason, code="business-rule", issues=[issue])


def refs(node: Any) -> list[str]:
    items = node if isinstance(node, list) else [node] if node else []
    return [
        str(r["reference"])
        for r in items
        if isinstance(r, dict) and isinstance(r.get("reference"), str)
    ]


def patient_of(appt: Doc) -> str | None:
    for p in appt.get("participant") or ():
        ref = (p.get("actor") or {}).get("reference") if isinstance(p, dict) else None
        if isinstance(ref, str) and ref.startswith("Patient/"):
            return ref
    return None


def actors(appt: Doc) -> list[str]:
    return [
        str(p["actor"]["reference"])
        for p in appt.get("participant") or ()
        if isinstance(p, dict) and isinstance((p.get("actor") or {}).get("reference"), str)
    ]


@dataclass(frozen=True)
class Facts:
    patient: str
    age: int | None
    clinic: Clinic
    visit_type: VisitType
    slots: tuple[Doc, ...]  # current stored documents (res, vid)
    practitioners: tuple[str, ...]
    location: str | None
    start: datetime | None
    end: datetime | None
    start_text: str | None
    end_text: str | None


async def _current(ctx: ServerContext, ref: str, session: AsyncClientSession | None) -> Doc | None:
    rt, _, rid = ref.partition("/")
    return await ctx.store.current(rt, rid, session=session)


async def age_of(
    ctx: ServerContext, patient: str, session: AsyncClientSession | None
) -> int | None:
    doc = await _current(ctx, patient, session)
    return age_on((doc or {}).get("res", {}).get("birthDate"), clock_now().date())


def _visit_type(
    table: SchedulingTable, clinic: Clinic, wanted: list[str], offered: list[str] | None
) -> VisitType:
    if offered is not None:
        chosen = [c for c in wanted if c in offered] if wanted else offered
        if wanted and not chosen:
            raise refuse(
                f"the Slot does not offer the visit type {wanted[0]}",
                expression="Appointment.serviceType",
            )
    else:
        chosen = wanted
    if len(chosen) != 1:
        raise refuse(
            f"say which visit type this is: one serviceType coding of {table.system}",
            expression="Appointment.serviceType",
        )
    vt = clinic.visit_type(chosen[0])
    if vt is None:
        raise refuse(
            f"{clinic.organization} has no visit type {chosen[0]}",
            expression="Appointment.serviceType",
        )
    return vt


async def facts_of(
    ctx: ServerContext,
    table: SchedulingTable,
    appt: Doc,
    session: AsyncClientSession | None,
    *,
    need_slot: bool,
) -> Facts:
    """The facts of `appt`, or 422 saying what it lacks."""
    patient = patient_of(appt)
    if patient is None:
        raise refuse(
            "an Appointment needs the patient as a participant",
            expression="Appointment.participant",
        )
    wanted = table.codes_of(appt.get("serviceType"))
    slot_refs = refs(appt.get("slot"))
    if not slot_refs:
        if need_slot:
            raise refuse(
                "name the Slot to book (Appointment.slot), or send a request: status proposed "
                "with requestedPeriod and a reason",
                expression="Appointment.slot",
            )
        named = next((c for a in actors(appt) if (c := table.clinic(a)) is not None), None)
        if named is None:
            raise refuse(
                "name the clinic: a participant that is one of its Locations or its Organization",
                expression="Appointment.participant",
            )
        vt = _visit_type(table, named, wanted, None)
        return Facts(
            patient,
            await age_of(ctx, patient, session),
            named,
            vt,
            (),
            (),
            None,
            None,
            None,
            None,
            None,
        )
    slots: list[Doc] = []
    for ref in slot_refs:
        doc = await _current(ctx, ref, session) if ref.startswith("Slot/") else None
        if doc is None:
            raise refuse(f"{ref} is not a known Slot", expression="Appointment.slot")
        slots.append(doc)
    clinics: set[str] = set()
    practitioners: list[str] = []
    location: str | None = None
    offered: list[str] | None = None
    clinic: Clinic | None = None
    for doc in slots:
        slot = doc["res"]
        sched_ref = (slot.get("schedule") or {}).get("reference", "")
        sched = (
            await _current(ctx, sched_ref, session) if sched_ref.startswith("Schedule/") else None
        )
        sched_actors = refs((sched or {}).get("res", {}).get("actor"))
        loc = next((a for a in sched_actors if a.startswith("Location/")), None)
        clinic = table.clinic_of_location(loc) if loc else None
        if clinic is None:
            raise refuse(f"Slot/{doc['id']} is not at a clinic that books through the portal")
        clinics.add(clinic.organization)
        location = location or loc
        practitioners += [
            a
            for a in sched_actors
            if a.split("/")[0] in {"Practitioner", "PractitionerRole"} and a not in practitioners
        ]
        codes = table.codes_of(slot.get("serviceType"))
        offered = codes if offered is None else [c for c in offered if c in codes]
    if len(clinics) != 1 or clinic is None:
        raise refuse(
            "the Slots of one Appointment must be at one clinic", expression="Appointment.slot"
        )
    vt = _visit_type(table, clinic, wanted, offered or [])
    ordered = sorted(slots, key=lambda d: str(d["res"].get("start")))
    start_text, end_text = ordered[0]["res"].get("start"), ordered[-1]["res"].get("end")
    return Facts(
        patient,
        await age_of(ctx, patient, session),
        clinic,
        vt,
        tuple(slots),
        tuple(practitioners),
        location,
        parse_instant(start_text),
        parse_instant(end_text),
        start_text,
        end_text,
    )


def completed(table: SchedulingTable, appt: Doc, f: Facts, status: str) -> Doc:
    """`appt` as the booking stores it: times from its Slots, the visit type coded, the
    patient, practitioner and Location as participants, and the confidential labels."""
    out = {**appt, "status": status}
    if f.start_text and f.end_text:
        out["start"], out["end"] = f.start_text, f.end_text
        if f.start and f.end:
            out["minutesDuration"] = int((f.end - f.start).total_seconds() // 60)
    others = [cc for cc in out.get("serviceType") or () if not table.codes_of([cc])]
    out["serviceType"] = [table.concept(f.visit_type), *others]
    have = set(actors(out))
    participants = [dict(p) for p in out.get("participant") or ()]
    for p in participants:
        if (p.get("actor") or {}).get("reference") == f.patient and status == "booked":
            p["status"] = "accepted"
    for ref in [*f.practitioners, *([f.location] if f.location else [])]:
        if ref not in have:
            participants.append(
                {"actor": {"reference": ref}, "required": "required", "status": "accepted"}
            )
    out["participant"] = participants
    labels = f.visit_type.labels()
    if labels:
        meta = dict(out.get("meta") or {})
        security = list(meta.get("security") or [])
        for lab in labels:
            if not any(
                s.get("system") == lab["system"] and s.get("code") == lab["code"] for s in security
            ):
                security.append(lab)
        meta["security"] = security
        out["meta"] = meta
    return out
