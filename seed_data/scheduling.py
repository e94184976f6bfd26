"""Schedules with free and busy Slots for the next two working weeks, Appointments past and
future (booked, requested, fulfilled, missed, cancelled) and the Encounters of past visits.

Slot ids name the working day after the seeding day and the time, e.g.
``slot-rachel-wd03-0900`` is Dr. Kim's 09:00 slot on the third working day from today.
"""

from __future__ import annotations

from dataclasses import dataclass

from seed_data.common import (
    ACT_CODE,
    PARTICIPATION_TYPE,
    SNOMED,
    V2_0276,
    Clock,
    Json,
    coding,
    concept,
    labels,
    ref,
    stamp,
    text_concept,
)
from seed_data.directory import (
    CLINICIANS,
    clinician_ref,
    location_ref,
    org_ref,
    patient_ref,
    related_person_ref,
)

WORKING_DAYS = 10

# Bookable clinicians: key -> (slot start times, minutes per slot, service)
SCHEDULES: dict[str, tuple[tuple[str, ...], int, str]] = {
    "rachel": (("09:00", "14:00"), 30, "Primary care"),
    "laura": (("10:00",), 30, "Primary care"),
    "michael": (("13:00",), 30, "Primary care"),
    "ethan": (("15:00",), 60, "Behavioral health"),
}

# The visit types (profiles/portal/scheduling.json, serviceType codes) each clinician's Slots
# offer: the clinic's types, the request-only ones included (its team books those).
VISIT_TYPE_SYSTEM = "https://mhs.example.org/fhir/CodeSystem/visit-type"
_VISIT_TYPE_NAMES = {
    "wellness": "Routine wellness exam",
    "follow-up": "Follow-up visit",
    "acute": "Acute sick call",
    "adolescent-confidential": "Confidential adolescent visit",
    "procedure": "Minor procedure",
    "behavioral-health": "Behavioral health visit",
}
_FAMILY_MEDICINE = ("wellness", "follow-up", "acute", "adolescent-confidential", "procedure")
VISIT_TYPES: dict[str, tuple[str, ...]] = {
    "rachel": _FAMILY_MEDICINE,
    "laura": _FAMILY_MEDICINE,
    "michael": ("wellness", "follow-up"),
    "ethan": ("behavioral-health",),
}


def visit_type_concept(code: str) -> Json:
    return concept(VISIT_TYPE_SYSTEM, code, _VISIT_TYPE_NAMES[code])


# Slots taken by people outside the seed population, or blocked: (clinician, day, time) -> status
BLOCKED: dict[tuple[str, int, str], str] = {
    ("rachel", 1, "09:00"): "busy",
    ("michael", 2, "13:00"): "busy-unavailable",
}

_KIND = {
    "ROUTINE": "Routine appointment - default if not valued",
    "CHECKUP": "A routine check-up, such as an annual physical",
    "FOLLOWUP": "A follow up visit from a previous appointment",
    "WALKIN": "A previously unscheduled walk-in visit",
}
_ENCOUNTER_TYPE = {
    "CHECKUP": ("185349003", "Encounter for check up (procedure)"),
    "FOLLOWUP": ("390906007", "Follow-up encounter (procedure)"),
    "WALKIN": ("185345009", "Encounter for symptom (procedure)"),
    "ROUTINE": ("185347001", "Encounter for problem (procedure)"),
}


@dataclass(frozen=True)
class Visit:
    id: str
    patient: str
    clinician: str
    status: str  # fulfilled | noshow | cancelled | booked | proposed
    day: int  # past: days from today (negative); booked: n-th working day; proposed: unused
    hhmm: str
    kind: str  # v2-0276 code
    reason: tuple[str, str] | str  # SNOMED (code, display) or plain text
    description: str
    security: tuple[str, ...] = ()

    @property
    def encounter_id(self) -> str:
        return "enc-" + self.id.removeprefix("appt-")

    @property
    def minutes(self) -> int:
        return SCHEDULES.get(self.clinician, ((), 30, ""))[1]


# fmt: off
VISITS: tuple[Visit, ...] = (
    # Past visits that took place (each has an Encounter).
    Visit("appt-james-annual-physical", "james", "rachel", "fulfilled", -45, "08:30", "CHECKUP",
          "Periodic health assessment", "Annual physical and periodic health assessment"),
    Visit("appt-maria-migraine", "maria", "rachel", "fulfilled", -90, "10:00", "ROUTINE",
          ("37796009", "Migraine"), "Recurring headaches"),
    Visit("appt-emma-sore-throat", "emma", "rachel", "fulfilled", -200, "11:00", "WALKIN",
          ("43878008", "Streptococcal sore throat"), "Sore throat and fever"),
    Visit("appt-daniel-knee-injury", "daniel", "rachel", "fulfilled", -30, "15:00", "WALKIN",
          ("444448004", "Injury of medial collateral ligament of knee"),
          "Left knee injury playing intramural soccer"),
    Visit("appt-sophia-sports-physical", "sophia", "rachel", "fulfilled", -120, "15:30", "CHECKUP",
          "Sports pre-participation physical", "School sports physical (soccer)"),
    Visit("appt-sophia-reproductive-health", "sophia", "rachel", "fulfilled", -60, "16:00",
          "ROUTINE", "Confidential adolescent visit", "Confidential adolescent visit",
          ("SEX", "R")),
    Visit("appt-sophia-bh-intake", "sophia", "ethan", "fulfilled", -50, "15:00", "ROUTINE",
          ("197480006", "Anxiety disorder"), "Behavioral health intake", ("PSY", "R")),
    Visit("appt-liam-well-child", "liam", "rachel", "fulfilled", -150, "09:30", "CHECKUP",
          "Well-child visit", "Well-child visit (8 years)"),
    Visit("appt-robert-diabetes-followup", "robert", "michael", "fulfilled", -75, "13:30",
          "FOLLOWUP", ("44054006", "Diabetes mellitus type 2"), "Diabetes follow-up"),
    Visit("appt-eleanor-followup", "eleanor", "michael", "fulfilled", -100, "10:30", "FOLLOWUP",
          ("49436004", "Atrial fibrillation"), "Atrial fibrillation and memory follow-up"),
    Visit("appt-marcus-ankle", "marcus", "laura", "fulfilled", -25, "08:00", "WALKIN",
          ("44465007", "Sprain of ankle"), "Right ankle rolled during a ruck march"),
    Visit("appt-samuel-establish-care", "samuel", "michael", "fulfilled", -180, "14:00", "ROUTINE",
          "Establish care", "Establish primary care after transfer from the VA"),
    # Past visits that did not take place.
    Visit("appt-karen-missed", "karen", "laura", "noshow", -40, "10:30", "FOLLOWUP",
          ("83664006", "Idiopathic atrophic hypothyroidism"), "Thyroid follow-up"),
    Visit("appt-liam-cancelled", "liam", "rachel", "cancelled", -20, "14:30", "FOLLOWUP",
          ("24079001", "Atopic dermatitis"), "Eczema follow-up"),
    # Future visits booked on a Slot.
    Visit("appt-james-lipid-followup", "james", "rachel", "booked", 3, "09:00", "FOLLOWUP",
          ("55822004", "Hyperlipidemia"), "Cholesterol and blood pressure follow-up"),
    Visit("appt-emma-allergy-followup", "emma", "rachel", "booked", 5, "14:00", "FOLLOWUP",
          ("367498001", "Seasonal allergic rhinitis"), "Allergy follow-up"),
    Visit("appt-daniel-knee-followup", "daniel", "rachel", "booked", 8, "09:00", "FOLLOWUP",
          ("444448004", "Injury of medial collateral ligament of knee"), "Knee recheck"),
    Visit("appt-sophia-well-visit", "sophia", "rachel", "booked", 10, "14:00", "CHECKUP",
          "Well adolescent visit", "Well adolescent visit"),
    Visit("appt-sophia-bh-followup", "sophia", "ethan", "booked", 4, "15:00", "FOLLOWUP",
          ("197480006", "Anxiety disorder"), "Behavioral health follow-up", ("PSY", "R")),
    Visit("appt-liam-sports-physical", "liam", "rachel", "booked", 2, "14:00", "CHECKUP",
          "Sports pre-participation physical", "School sports physical"),
    Visit("appt-robert-annual", "robert", "michael", "booked", 6, "13:00", "CHECKUP",
          "Annual wellness visit", "Annual wellness visit"),
    Visit("appt-eleanor-followup-next", "eleanor", "michael", "booked", 1, "13:00", "FOLLOWUP",
          ("49436004", "Atrial fibrillation"), "Follow-up; daughter will attend"),
    Visit("appt-karen-thyroid", "karen", "laura", "booked", 7, "10:00", "FOLLOWUP",
          ("83664006", "Idiopathic atrophic hypothyroidism"), "Thyroid follow-up (rescheduled)"),
    Visit("appt-samuel-hip-followup", "samuel", "michael", "booked", 9, "13:00", "FOLLOWUP",
          ("239872002", "Osteoarthritis of hip"), "Hip pain follow-up"),
    # Requested through the portal, not yet booked.
    Visit("appt-maria-requested", "maria", "rachel", "proposed", 0, "", "ROUTINE",
          ("37796009", "Migraine"), "Migraine medication review"),
    Visit("appt-marcus-requested", "marcus", "laura", "proposed", 0, "", "FOLLOWUP",
          ("44465007", "Sprain of ankle"), "Ankle recheck before return to full duty"),
)
# fmt: on


def build(clock: Clock) -> list[Json]:
    booked = {(v.clinician, v.day, v.hhmm): v for v in VISITS if v.status == "booked"}
    out: list[Json] = [schedule(clock, key) for key in SCHEDULES]
    out += slots(clock, booked)
    out += [appointment(clock, v) for v in VISITS]
    out += [encounter(clock, v) for v in VISITS if v.status == "fulfilled"]
    return out


def schedule_id(clinician: str) -> str:
    return f"schedule-{CLINICIANS[clinician].id}"


def slot_id(clinician: str, working_day: int, hhmm: str) -> str:
    return f"slot-{clinician}-wd{working_day:02d}-{hhmm.replace(':', '')}"


def _specialty(clinician: str) -> list[Json]:
    spec = CLINICIANS[clinician].specialty
    return [concept(SNOMED, *spec)] if spec else [text_concept("Clinical psychology")]


def schedule(clock: Clock, key: str) -> Json:
    c = CLINICIANS[key]
    return {
        "resourceType": "Schedule",
        "id": schedule_id(key),
        "active": True,
        "serviceType": [text_concept(SCHEDULES[key][2])],
        "specialty": _specialty(key),
        "actor": [clinician_ref(key), location_ref(c.location or "loc-lakeside-mmc")],
        "planningHorizon": {
            "start": stamp(clock.working_day(1), "00:00"),
            "end": stamp(clock.working_day(WORKING_DAYS), "23:59"),
        },
        "comment": f"Bookable appointments with {c.name}",
    }


def slots(clock: Clock, booked: dict[tuple[str, int, str], Visit]) -> list[Json]:
    out: list[Json] = []
    for key, (times, minutes, service) in SCHEDULES.items():
        for n in range(1, WORKING_DAYS + 1):
            day = clock.working_day(n)
            for hhmm in times:
                status = "busy" if (key, n, hhmm) in booked else BLOCKED.get((key, n, hhmm), "free")
                slot: Json = {
                    "resourceType": "Slot",
                    "id": slot_id(key, n, hhmm),
                    "serviceType": [
                        text_concept(service),
                        *(visit_type_concept(c) for c in VISIT_TYPES[key]),
                    ],
                    "specialty": _specialty(key),
                    "schedule": ref("Schedule", schedule_id(key)),
                    "status": status,
                    "start": stamp(day, hhmm),
                    "end": stamp(day, hhmm, minutes),
                }
                if status == "busy-unavailable":
                    slot["comment"] = "Provider in training"
                out.append(slot)
    return out


def _reason(v: Visit) -> Json:
    if isinstance(v.reason, tuple):
        return concept(SNOMED, *v.reason)
    return text_concept(v.reason)


def _participants(v: Visit, clinician_status: str) -> list[Json]:
    location = CLINICIANS[v.clinician].location or "loc-lakeside-mmc"
    out: list[Json] = [
        {"actor": patient_ref(v.patient), "required": "required", "status": "accepted"},
        {
            "type": [concept(PARTICIPATION_TYPE, "PPRF", "primary performer")],
            "actor": clinician_ref(v.clinician),
            "required": "required",
            "status": clinician_status,
        },
        {"actor": location_ref(location), "required": "required", "status": "accepted"},
    ]
    if v.patient == "eleanor":
        out.append(
            {
                "actor": related_person_ref("susan", "eleanor"),
                "required": "optional",
                "status": "accepted",
            }
        )
    return out


_KIND_VISIT_TYPE = {
    "CHECKUP": "wellness",
    "FOLLOWUP": "follow-up",
    "WALKIN": "acute",
    "ROUTINE": "follow-up",
}


def visit_type_of(v: Visit) -> str:
    """The visit type of a seeded visit (the clinician's, by its kind and labels)."""
    offered = VISIT_TYPES[v.clinician]
    if "SEX" in v.security and "adolescent-confidential" in offered:
        return "adolescent-confidential"
    code = _KIND_VISIT_TYPE[v.kind]
    return code if code in offered else offered[0]


def appointment(clock: Clock, v: Visit) -> Json:
    res: Json = {"resourceType": "Appointment", "id": v.id}
    if v.security:
        res["meta"] = {"security": labels(*v.security)}
    res |= {
        "status": v.status,
        "serviceType": [
            text_concept(SCHEDULES[v.clinician][2]),
            visit_type_concept(visit_type_of(v)),
        ],
        "specialty": _specialty(v.clinician),
        "appointmentType": concept(V2_0276, v.kind, _KIND[v.kind]),
        "reasonCode": [_reason(v)],
        "description": v.description,
    }
    if v.status == "proposed":
        res["created"] = clock.at(-2, "20:15")
        res["comment"] = "Requested through the patient portal"
        res["participant"] = _participants(v, "needs-action")
        res["requestedPeriod"] = [
            {
                "start": clock.working_day(1).isoformat(),
                "end": clock.working_day(WORKING_DAYS).isoformat(),
            }
        ]
        return res
    if v.status == "booked":
        day = clock.working_day(v.day)
        res |= {
            "start": stamp(day, v.hhmm),
            "end": stamp(day, v.hhmm, v.minutes),
            "minutesDuration": v.minutes,
            "slot": [ref("Slot", slot_id(v.clinician, v.day, v.hhmm))],
            "created": clock.at(-6, "11:40"),
        }
    else:
        res |= {
            "start": clock.at(v.day, v.hhmm),
            "end": clock.at(v.day, v.hhmm, v.minutes),
            "minutesDuration": v.minutes,
            "created": clock.at(v.day - 14, "09:05"),
        }
    if v.status == "cancelled":
        res["cancelationReason"] = concept(
            "http://terminology.hl7.org/CodeSystem/appointment-cancellation-reason",
            "pat",
            "Patient",
        )
    res["participant"] = _participants(v, "accepted")
    return res


def encounter(clock: Clock, v: Visit) -> Json:
    location = CLINICIANS[v.clinician].location or "loc-lakeside-mmc"
    res: Json = {"resourceType": "Encounter", "id": v.encounter_id}
    if v.security:
        res["meta"] = {"security": labels(*v.security)}
    res |= {
        "status": "finished",
        "class": coding(ACT_CODE, "AMB", "ambulatory"),
        "type": [concept(SNOMED, *_ENCOUNTER_TYPE[v.kind])],
        "subject": patient_ref(v.patient),
        "participant": [
            {
                "type": [concept(PARTICIPATION_TYPE, "PPRF", "primary performer")],
                "individual": clinician_ref(v.clinician),
            }
        ],
        "appointment": [ref("Appointment", v.id)],
        "period": {"start": clock.at(v.day, v.hhmm), "end": clock.at(v.day, v.hhmm, v.minutes)},
        "reasonCode": [_reason(v)],
        "location": [{"location": location_ref(location), "status": "completed"}],
        "serviceProvider": org_ref(CLINICIANS[v.clinician].org),
    }
    return res


def encounter_ref(visit_id: str) -> Json:
    """Reference to the Encounter of the past visit ``appt-<visit_id>``."""
    return ref("Encounter", f"enc-{visit_id}")


def visit(visit_id: str) -> Visit:
    return next(v for v in VISITS if v.id == f"appt-{visit_id}")
