"""Results release (profiles/access/release.json): one result held by the PCM for a stated
lawful reason, with its expiry, so the portal shows how a hold looks on both sides: the
clinician reads it with the hold, the patient and the proxies do not see it until then."""

from __future__ import annotations

from seed_data.common import (
    LOINC,
    OBSERVATION_CATEGORY,
    V2_0074,
    Clock,
    Json,
    coding,
    concept,
    ref,
    text_attachment,
)
from seed_data.directory import clinician_ref, patient_ref

HELD_REPORT = "dr-james-held-biopsy"
HELD_DIAGNOSIS = "obs-james-held-biopsy-diagnosis"
HOLD_EXTENSION = "https://mhs.example.org/fhir/StructureDefinition/result-hold"
HOLD_REASONS = "https://mhs.example.org/fhir/CodeSystem/result-hold-reason"
HOLD_DAYS = 10  # within the table's hold.max_days


def hold_expiry(clock: Clock) -> str:
    return clock.at(HOLD_DAYS, "17:00")


def hold(clock: Clock) -> list[Json]:
    """The hold, on the report and on its result alike: a hold covers one resource, so a
    report's results are held with it (docs/portal.md, "Results release")."""
    return [
        {
            "url": HOLD_EXTENSION,
            "extension": [
                {
                    "url": "reason",
                    "valueCoding": coding(
                        HOLD_REASONS, "preventing-harm", "Preventing harm (45 CFR 171.201)"
                    ),
                },
                {"url": "expires", "valueDateTime": hold_expiry(clock)},
            ],
        }
    ]


def build(clock: Clock) -> list[Json]:
    diagnosis: Json = {
        "resourceType": "Observation",
        "id": HELD_DIAGNOSIS,
        "extension": hold(clock),
        "status": "final",
        "category": [concept(OBSERVATION_CATEGORY, "laboratory", "Laboratory")],
        "code": concept(LOINC, "22637-3", "Pathology report final diagnosis Narrative"),
        "subject": patient_ref("james"),
        "effectiveDateTime": clock.at(-3, "10:00"),
        "issued": clock.at(-1, "15:30"),
        "performer": [clinician_ref("helen")],
        "valueString": "Pending discussion with the patient.",
    }
    text = (
        "SURGICAL PATHOLOGY REPORT\nSpecimen: skin, left shoulder (shave biopsy)\n"
        "Diagnosis: pending discussion with the patient.\nPathologist: Helen Novak, MD"
    )
    report: Json = {
        "resourceType": "DiagnosticReport",
        "id": HELD_REPORT,
        "extension": hold(clock),
        "status": "final",
        "category": [concept(V2_0074, "SP", "Surgical Pathology")],
        "code": concept(LOINC, "11526-1", "Pathology study", "Skin biopsy pathology"),
        "subject": patient_ref("james"),
        "effectiveDateTime": clock.at(-3, "10:00"),
        "issued": clock.at(-1, "15:30"),
        "resultsInterpreter": [clinician_ref("helen")],
        "result": [ref("Observation", HELD_DIAGNOSIS)],
        "conclusion": "See the report; the PCM discusses it with the patient first.",
        "presentedForm": [text_attachment(text, "Skin biopsy pathology", clock.at(-1, "15:30"))],
    }
    return [diagnosis, report]
