"""Prescriptions (RxNorm), their fills, and refill and renewal requests.

Whether a prescription can be refilled is FHIR data, not a flag:

- refills left: ``dispenseRequest.numberOfRepeatsAllowed`` > 0 and ``validityPeriod``
  still running;
- none left: ``numberOfRepeatsAllowed`` = 0 (the first fill was the only one), still valid;
- expired: ``validityPeriod.end`` is in the past. Status stays ``active`` (the order was
  never stopped), which is what a renewal request starts from.
"""

from __future__ import annotations

from dataclasses import dataclass

from seed_data.common import RXNORM, SNOMED, Clock, Json, concept, labels, ref, text_concept, ucum
from seed_data.directory import PEOPLE, clinician_ref, location_ref, org_ref, patient_ref

CATEGORY = "http://terminology.hl7.org/CodeSystem/medicationrequest-category"
TASK_CODE = "http://hl7.org/fhir/CodeSystem/task-code"


@dataclass(frozen=True)
class Rx:
    id: str
    patient: str
    rxnorm: str
    display: str
    sig: str
    per_day: float  # doses a day, for the timing
    quantity: int
    unit: str
    repeats: int
    valid: tuple[int, int]  # validityPeriod start and end, days from today
    reason: str | None = None  # Condition id
    status: str = "active"
    security: tuple[str, ...] = ()
    oral: bool = True


# fmt: off
PRESCRIPTIONS: tuple[Rx, ...] = (
    Rx("medrx-james-lisinopril", "james", "314076", "lisinopril 10 MG Oral Tablet",
       "Take 1 tablet by mouth once daily", 1, 30, "tablet", 5, (-60, 305),
       "cond-james-hypertension"),
    Rx("medrx-james-naproxen", "james", "849574", "naproxen sodium 220 MG Oral Tablet",
       "Take 1 tablet by mouth twice daily with food as needed for back pain", 2, 60, "tablet", 0,
       (-45, 320), "cond-james-low-back-pain"),
    Rx("medrx-james-atorvastatin", "james", "617310", "atorvastatin 20 MG Oral Tablet",
       "Take 1 tablet by mouth at bedtime", 1, 90, "tablet", 3, (-400, -35),
       "cond-james-hyperlipidemia"),
    Rx("medrx-maria-ferrous-sulfate", "maria", "310325", "ferrous sulfate 325 MG Oral Tablet",
       "Take 1 tablet by mouth once daily", 1, 30, "tablet", 2, (-90, 275), "cond-maria-anemia"),
    Rx("medrx-maria-ibuprofen", "maria", "310965", "ibuprofen 200 MG Oral Tablet",
       "Take 2 tablets by mouth at migraine onset; at most 6 tablets a day", 3, 60, "tablet", 1,
       (-90, 275), "cond-maria-migraine"),
    Rx("medrx-emma-cetirizine", "emma", "1014678", "cetirizine hydrochloride 10 MG Oral Tablet",
       "Take 1 tablet by mouth once daily during allergy season", 1, 30, "tablet", 11, (-200, 165),
       "cond-emma-allergic-rhinitis"),
    Rx("medrx-emma-amoxicillin", "emma", "308182", "amoxicillin 250 MG Oral Capsule",
       "Take 2 capsules by mouth twice daily for 10 days", 2, 40, "capsule", 0, (-200, -190),
       "cond-emma-strep-throat", status="completed"),
    Rx("medrx-sophia-albuterol", "sophia", "745679",
       "200 ACTUAT albuterol 0.09 MG/ACTUAT Metered Dose Inhaler",
       "Inhale 2 puffs every 4 to 6 hours as needed for wheezing", 4, 1, "inhaler", 2, (-120, 245),
       "cond-sophia-asthma", oral=False),
    Rx("medrx-sophia-contraceptive", "sophia", "749785", "Ortho Tri-Cyclen 28 Day Pack",
       "Take 1 tablet by mouth daily", 1, 1, "pack", 11, (-60, 305), security=("SEX", "R")),
    Rx("medrx-liam-hydrocortisone", "liam", "106258", "hydrocortisone 10 MG/ML Topical Cream",
       "Apply a thin layer to affected skin twice daily", 2, 1, "tube", 1, (-150, 215),
       "cond-liam-atopic-dermatitis", oral=False),
    Rx("medrx-liam-epinephrine", "liam", "1870230",
       "NDA020800 0.3 ML epinephrine 1 MG/ML Auto-Injector",
       "Inject into outer thigh for anaphylaxis; call 911", 1, 2, "auto-injector", 1, (-150, 215),
       oral=False),
    Rx("medrx-robert-metformin", "robert", "860975",
       "24 HR metformin hydrochloride 500 MG Extended Release Oral Tablet",
       "Take 1 tablet by mouth with the evening meal", 1, 90, "tablet", 3, (-75, 290),
       "cond-robert-diabetes"),
    Rx("medrx-robert-amlodipine", "robert", "197361", "amlodipine 5 MG Oral Tablet",
       "Take 1 tablet by mouth once daily", 1, 90, "tablet", 0, (-380, -10),
       "cond-robert-hypertension"),
    Rx("medrx-eleanor-apixaban", "eleanor", "1364430", "apixaban 5 MG Oral Tablet",
       "Take 1 tablet by mouth twice daily", 2, 60, "tablet", 5, (-100, 265),
       "cond-eleanor-atrial-fibrillation"),
    Rx("medrx-eleanor-alendronate", "eleanor", "904419", "alendronic acid 10 MG Oral Tablet",
       "Take 1 tablet by mouth every morning with water, 30 minutes before food", 1, 30, "tablet",
       5, (-100, 265), "cond-eleanor-osteoporosis"),
    Rx("medrx-marcus-naproxen", "marcus", "849574", "naproxen sodium 220 MG Oral Tablet",
       "Take 1 tablet by mouth twice daily with food for 10 days", 2, 20, "tablet", 1, (-25, 340),
       "cond-marcus-ankle-sprain"),
    Rx("medrx-karen-levothyroxine", "karen", "966222", "levothyroxine sodium 0.075 MG Oral Tablet",
       "Take 1 tablet by mouth every morning on an empty stomach", 1, 90, "tablet", 3, (-380, -15),
       "cond-karen-hypothyroidism"),
)
# fmt: on

# (MedicationRequest id, days from today) of each completed fill
DISPENSES: tuple[tuple[str, int], ...] = (
    ("medrx-james-lisinopril", -60),
    ("medrx-james-lisinopril", -30),
    ("medrx-james-naproxen", -45),
    ("medrx-james-atorvastatin", -125),
)


def build(clock: Clock) -> list[Json]:
    by_id = {rx.id: rx for rx in PRESCRIPTIONS}
    out = [medication_request(clock, rx) for rx in PRESCRIPTIONS]
    counts: dict[str, int] = {}
    for rx_id, offset in DISPENSES:
        counts[rx_id] = counts.get(rx_id, 0) + 1
        out.append(dispense(clock, by_id[rx_id], counts[rx_id], offset))
    out += tasks(clock)
    return out


def medication_request(clock: Clock, rx: Rx) -> Json:
    res: Json = {"resourceType": "MedicationRequest", "id": rx.id}
    if rx.security:
        res["meta"] = {"security": labels(*rx.security)}
    dosage: Json = {
        "text": rx.sig,
        "timing": {"repeat": {"frequency": int(rx.per_day), "period": 1, "periodUnit": "d"}},
    }
    if rx.oral:
        dosage["route"] = concept(SNOMED, "26643006", "Oral route")
    res |= {
        "status": rx.status,
        "intent": "order",
        "category": [concept(CATEGORY, "outpatient", "Outpatient")],
        "medicationCodeableConcept": concept(RXNORM, rx.rxnorm, rx.display),
        "subject": patient_ref(rx.patient),
        "authoredOn": clock.at(rx.valid[0], "11:15"),
        "requester": clinician_ref(PEOPLE[rx.patient].pcm),
    }
    if rx.reason:
        res["reasonReference"] = [ref("Condition", rx.reason)]
    res["dosageInstruction"] = [dosage]
    res["dispenseRequest"] = {
        "validityPeriod": {"start": clock.date(rx.valid[0]), "end": clock.date(rx.valid[1])},
        "numberOfRepeatsAllowed": rx.repeats,
        "quantity": {"value": rx.quantity, "unit": rx.unit},
        "expectedSupplyDuration": ucum(30 if rx.quantity > 2 else 90, "d", "days"),
        "performer": org_ref("mmc"),
    }
    return res


def dispense(clock: Clock, rx: Rx, number: int, offset: int) -> Json:
    return {
        "resourceType": "MedicationDispense",
        "id": f"{rx.id.replace('medrx-', 'meddisp-')}-{number}",
        "status": "completed",
        "medicationCodeableConcept": concept(RXNORM, rx.rxnorm, rx.display),
        "subject": patient_ref(rx.patient),
        "performer": [{"actor": org_ref("mmc")}],
        "location": location_ref("loc-lakeside-mmc"),
        "authorizingPrescription": [ref("MedicationRequest", rx.id)],
        "quantity": {"value": rx.quantity, "unit": rx.unit},
        "daysSupply": ucum(rx.quantity // max(int(rx.per_day), 1), "d", "days"),
        "whenPrepared": clock.at(offset, "09:30"),
        "whenHandedOver": clock.at(offset, "12:10"),
        "dosageInstruction": [{"text": rx.sig}],
    }


def tasks(clock: Clock) -> list[Json]:
    return [
        {
            "resourceType": "Task",
            "id": "task-maria-refill-ferrous-sulfate",
            "status": "requested",
            "businessStatus": text_concept("Awaiting pharmacy review"),
            "intent": "order",
            "code": concept(TASK_CODE, "fulfill", "Fulfill the focal request", "Refill request"),
            "description": "Refill requested through the patient portal",
            "focus": ref("MedicationRequest", "medrx-maria-ferrous-sulfate"),
            "for": patient_ref("maria"),
            "authoredOn": clock.at(-1, "19:30"),
            "requester": patient_ref("maria"),
            "owner": org_ref("mmc"),
        },
        {
            "resourceType": "Task",
            "id": "task-james-renew-atorvastatin",
            "status": "requested",
            "businessStatus": text_concept("Awaiting PCM review"),
            "intent": "proposal",
            "code": text_concept("Prescription renewal request"),
            "description": "Renewal of an expired prescription requested through the portal",
            "focus": ref("MedicationRequest", "medrx-james-atorvastatin"),
            "for": patient_ref("james"),
            "authoredOn": clock.at(-3, "07:55"),
            "requester": patient_ref("james"),
            "owner": clinician_ref("rachel"),
        },
    ]
