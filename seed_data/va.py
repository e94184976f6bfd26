"""The veteran's records that arrived from the VA: each carries ``meta.source`` and a VA
identifier, and one Provenance names the VA as their author."""

from __future__ import annotations

from seed_data.clinical import Problem, condition
from seed_data.common import (
    CVX,
    LOINC,
    RXNORM,
    SNOMED,
    VA_SOURCE,
    Clock,
    Json,
    concept,
    labels,
    ref,
    text_attachment,
    ucum,
)
from seed_data.directory import clinician_ref, org_ref, patient_ref
from seed_data.labs import Draw, Lab, numeric

VA_RECORD_ID = "https://va.example.org/fhir/sid/record-id"
PROVENANCE_ID = "prov-samuel-va-records"


def build(clock: Clock) -> list[Json]:
    records = [
        condition(
            clock,
            Problem(
                "cond-samuel-va-ptsd",
                "samuel",
                "47505003",
                "Posttraumatic stress disorder",
                -3650,
                security=("PSY", "R"),
                recorder="angela",
            ),
        ),
        condition(
            clock,
            Problem(
                "cond-samuel-va-tinnitus",
                "samuel",
                "60862001",
                "Tinnitus",
                -4000,
                recorder="angela",
            ),
        ),
        condition(
            clock,
            Problem(
                "cond-samuel-va-hearing-loss",
                "samuel",
                "15188001",
                "Hearing loss",
                -4000,
                recorder="angela",
            ),
        ),
        sertraline(clock),
        hba1c(clock),
        tdap(clock),
        summary(clock),
    ]
    for n, record in enumerate(records, start=1):
        mark_from_va(record, n)
    return [*records, provenance(clock, records)]


def mark_from_va(record: Json, n: int) -> None:
    meta = record.setdefault("meta", {})
    meta["source"] = VA_SOURCE
    identifier = {"system": VA_RECORD_ID, "value": f"VA-{record['resourceType']}-{4100 + n}"}
    # Keep "identifier" near the top of the resource for readability.
    rest = {k: v for k, v in record.items() if k not in {"resourceType", "id", "meta"}}
    head = {"resourceType": record["resourceType"], "id": record["id"], "meta": meta}
    record.clear()
    record.update(head | {"identifier": [identifier]} | rest)


def sertraline(clock: Clock) -> Json:
    return {
        "resourceType": "MedicationRequest",
        "id": "medrx-samuel-va-sertraline",
        "meta": {"security": labels("PSY", "R")},
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": concept(RXNORM, "312940", "sertraline 50 MG Oral Tablet"),
        "subject": patient_ref("samuel"),
        "authoredOn": clock.at(-200, "10:00"),
        "requester": clinician_ref("angela"),
        "reasonReference": [ref("Condition", "cond-samuel-va-ptsd")],
        "dosageInstruction": [{"text": "Take 1 tablet by mouth once daily"}],
        "dispenseRequest": {
            "validityPeriod": {"start": clock.date(-200), "end": clock.date(165)},
            "numberOfRepeatsAllowed": 5,
            "quantity": {"value": 90, "unit": "tablet"},
            "expectedSupplyDuration": ucum(90, "d", "days"),
            "performer": org_ref("va"),
        },
    }


def hba1c(clock: Clock) -> Json:
    obs = numeric(
        clock,
        Draw("samuel", -220),
        "obs-samuel-va-hba1c",
        Lab("hba1c", "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", 5.9, "%", 4.0, 5.6),
    )
    obs["performer"] = [org_ref("va")]
    return obs


def tdap(clock: Clock) -> Json:
    return {
        "resourceType": "Immunization",
        "id": "imm-samuel-va-tdap",
        "status": "completed",
        "vaccineCode": concept(CVX, "115", "Tdap"),
        "patient": patient_ref("samuel"),
        "occurrenceDateTime": clock.at(-1200, "11:00"),
        "primarySource": False,
        "reportOrigin": concept(
            "http://terminology.hl7.org/CodeSystem/immunization-origin",
            "provider",
            "Other Provider",
        ),
        "performer": [{"actor": org_ref("va")}],
    }


def summary(clock: Clock) -> Json:
    written = clock.at(-190, "16:00")
    body = (
        "VA primary care summary for Samuel D. Ortiz. Problems: PTSD (in care, stable on "
        "sertraline), tinnitus and bilateral hearing loss (service connected). HbA1c 5.9 %. "
        "Transferring primary care to Lakeside MMC; VA mental health follow-up continues."
    )
    return {
        "resourceType": "DocumentReference",
        "id": "doc-samuel-va-summary",
        "meta": {"security": labels("PSY", "R")},
        "status": "current",
        "docStatus": "final",
        "type": concept(LOINC, "34133-9", "Summary of episode note"),
        "category": [
            concept(
                "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category",
                "clinical-note",
                "Clinical Note",
            )
        ],
        "subject": patient_ref("samuel"),
        "date": written,
        "author": [clinician_ref("angela")],
        "custodian": org_ref("va"),
        "description": "VA primary care summary at transfer of care",
        "content": [{"attachment": text_attachment(body, "VA care summary", written)}],
        "context": {"practiceSetting": concept(SNOMED, "419192003", "Internal medicine")},
    }


def provenance(clock: Clock, records: list[Json]) -> Json:
    return {
        "resourceType": "Provenance",
        "id": PROVENANCE_ID,
        "target": [ref(r["resourceType"], r["id"]) for r in records],
        "recorded": clock.at(-185, "02:30"),
        "activity": concept(
            "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
            "CREATE",
            "create",
            "Imported from the VA",
        ),
        "reason": [
            concept("http://terminology.hl7.org/CodeSystem/v3-ActReason", "TREAT", "treatment")
        ],
        "agent": [
            {
                "type": concept(
                    "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                    "author",
                    "Author",
                ),
                "who": org_ref("va"),
            },
            {
                "type": concept(
                    "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                    "performer",
                    "Performer",
                ),
                "who": clinician_ref("angela"),
                "onBehalfOf": org_ref("va"),
            },
        ],
        "entity": [
            {
                "role": "source",
                "what": {
                    "identifier": {"system": VA_RECORD_ID, "value": "VA-CCD-4100"},
                    "display": "VA continuity of care document shared through the health "
                    "information exchange",
                },
            }
        ],
    }
