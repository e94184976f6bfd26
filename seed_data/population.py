"""The deterministic synthetic military-health population.

``build_population(today)`` returns every resource as a FHIR R4 JSON dict with a fixed,
readable id and relative ``Type/id`` references. The same ``today`` always gives the same
list (nothing reads the clock or draws random numbers), so loading it twice with PUT changes
nothing. Ages and dates are relative to ``today``: the adolescent is 15 and the child 8 on
whatever day the population is built.

``FIXTURES`` names the resources that tests and people look for; ``seed_data/logins.json``
repeats it under ``"fixtures"`` (a unit test keeps the two equal).
"""

from __future__ import annotations

from datetime import date

from seed_data import (
    clinical,
    clinics,
    documents,
    identities,
    labs,
    medications,
    messaging,
    people,
    pharmacies,
    reports,
    response_tasks,
    results_release,
    scheduling,
    va,
)
from seed_data.common import Clock, Json
from seed_data.directory import PEOPLE

# key -> (resource type, id)
_FIXTURES: dict[str, tuple[str, str]] = {
    # People, by role
    "sponsor": ("Patient", PEOPLE["james"].id),
    "spouse": ("Patient", PEOPLE["maria"].id),
    "adult-dependent-no-grant": ("Patient", PEOPLE["emma"].id),
    "adult-dependent-granted": ("Patient", PEOPLE["daniel"].id),
    "adolescent": ("Patient", PEOPLE["sophia"].id),
    "child-under-12": ("Patient", PEOPLE["liam"].id),
    "retiree": ("Patient", PEOPLE["robert"].id),
    "managed-beneficiary": ("Patient", PEOPLE["eleanor"].id),
    "cac-user": ("Patient", PEOPLE["marcus"].id),
    "piv-user": ("Patient", PEOPLE["karen"].id),
    "veteran": ("Patient", PEOPLE["samuel"].id),
    # Care providers
    "pcm-practitioner": ("Practitioner", "pcm-rachel-kim"),
    "nurse-practitioner": ("Practitioner", "rn-jessica-moore"),
    "behavioral-health-practitioner": ("Practitioner", "bh-ethan-walsh"),
    "clinic-organization": ("Organization", "lakeside-family-medicine"),
    "medical-center-organization": ("Organization", "lakeside-mmc"),
    "va-organization": ("Organization", "va-example-hcs"),
    "clinic-location": ("Location", "loc-family-medicine"),
    "clinic-pharmacy": ("Location", "pharmacy-fm"),
    "nurse-pool-careteam": ("CareTeam", "careteam-fm-nurse-pool"),
    "adolescent-careteam": ("CareTeam", "careteam-sophia-carter"),
    # Relationships and grants
    "grant-consent": ("Consent", "consent-daniel-proxy-james"),
    "grant-relatedperson": ("RelatedPerson", "rp-james-for-daniel"),
    "revoked-consent": ("Consent", "consent-emma-proxy-maria-revoked"),
    "managed-consent": ("Consent", "consent-eleanor-managed-susan"),
    "managed-relatedperson": ("RelatedPerson", "rp-susan-for-eleanor"),
    "family-group": ("Group", "group-carter-family"),
    "population-group": ("Group", "group-seed-population"),
    # The adolescent: sensitive records (hidden from proxies) ...
    "adolescent-sti-observation": ("Observation", "obs-sophia-chlamydia-naat"),
    "adolescent-sti-report": ("DiagnosticReport", "dr-sophia-sti-screen"),
    "adolescent-sti-condition": ("Condition", "cond-sophia-chlamydia"),
    "adolescent-reproductive-health-encounter": ("Encounter", "enc-sophia-reproductive-health"),
    "adolescent-reproductive-health-note": (
        "DocumentReference",
        "doc-sophia-reproductive-health-note",
    ),
    "adolescent-behavioral-health-note": ("DocumentReference", "doc-sophia-bh-intake-note"),
    "adolescent-behavioral-health-condition": ("Condition", "cond-sophia-anxiety"),
    "adolescent-sensitive-appointment": ("Appointment", "appt-sophia-bh-followup"),
    "adolescent-message": ("Communication", "msg-sophia-followup-1"),
    "adolescent-thread": ("Communication", "msg-sophia-followup"),
    # ... and ordinary ones (visible types for a proxy of a 12-17 year old, or not)
    "adolescent-ordinary-appointment": ("Appointment", "appt-sophia-well-visit"),
    "adolescent-ordinary-immunization": ("Immunization", "imm-sophia-hpv"),
    "adolescent-ordinary-allergy": ("AllergyIntolerance", "allergy-sophia-dust-mite"),
    "adolescent-ordinary-observation": ("Observation", "obs-sophia-weight"),
    "adolescent-ordinary-condition": ("Condition", "cond-sophia-asthma"),
    # Other family members
    "child-ordinary-observation": ("Observation", "obs-liam-peanut-ige"),
    "child-message-with-attachment": ("Communication", "msg-liam-sports-form-2"),
    # The nurse pool's inbox: unread, unanswered, sent ten days before seeding (overdue).
    "nurse-pool-overdue-message": ("Communication", "msg-karen-travel-1"),
    "granted-adult-ordinary-condition": ("Condition", "cond-daniel-mcl-injury"),
    "granted-adult-sensitive-condition": ("Condition", "cond-daniel-alcohol-use"),
    "no-grant-adult-ordinary-condition": ("Condition", "cond-emma-allergic-rhinitis"),
    # Medications: refills left, none left, expired
    "medication-refills-left": ("MedicationRequest", "medrx-james-lisinopril"),
    "medication-no-refills-left": ("MedicationRequest", "medrx-james-naproxen"),
    "medication-expired": ("MedicationRequest", "medrx-james-atorvastatin"),
    "medication-excluded": ("MedicationRequest", "medrx-james-oxycodone"),
    # Reports
    "sponsor-lab-report": ("DiagnosticReport", "dr-james-lipid-panel"),
    "radiology-report": ("DiagnosticReport", "dr-marcus-ankle-xray"),
    "radiology-report-pdf": ("Binary", "bin-marcus-ankle-xray-report"),
    "pathology-report": ("DiagnosticReport", "dr-robert-polyp-pathology"),
    "held-result": ("DiagnosticReport", results_release.HELD_REPORT),
    # Basic login: may see immunizations, not labs
    "retiree-immunization": ("Immunization", "imm-robert-zoster"),
    "retiree-lab-observation": ("Observation", "obs-robert-hba1c"),
    # VA records
    "veteran-va-provenance": ("Provenance", va.PROVENANCE_ID),
    "veteran-va-condition": ("Condition", "cond-samuel-va-tinnitus"),
    # Scheduling
    "pcm-schedule": ("Schedule", "schedule-pcm-rachel-kim"),
    "free-slot": ("Slot", scheduling.slot_id("rachel", 1, "14:00")),
    "busy-slot": ("Slot", scheduling.slot_id("rachel", 3, "09:00")),
    "booked-appointment": ("Appointment", "appt-james-lipid-followup"),
    "requested-appointment": ("Appointment", "appt-maria-requested"),
    "past-appointment": ("Appointment", "appt-james-annual-physical"),
    "previsit-questionnaire": ("Questionnaire", "previsit-clipboard"),
}

FIXTURES: dict[str, str] = {key: id_ for key, (_, id_) in _FIXTURES.items()}
FIXTURE_TYPES: dict[str, str] = {key: type_ for key, (type_, _) in _FIXTURES.items()}


def fixture_refs() -> dict[str, str]:
    """Each fixture as a relative reference, e.g. ``{"adolescent": "Patient/adolescent-..."}``."""
    return {key: f"{type_}/{id_}" for key, (type_, id_) in _FIXTURES.items()}


def build_population(today: date) -> list[Json]:
    """Every resource of the population, as built on ``today``."""
    clock = Clock(today)
    return response_tasks.added(
        identities.added(
            [
                *clinics.build(clock),
                *people.build(clock),
                *scheduling.build(clock),
                *clinical.build(clock),
                *labs.build(clock),
                *reports.build(clock),
                *results_release.build(clock),
                *medications.build(clock),
                *pharmacies.build(clock),
                *documents.build(clock),
                *messaging.build(clock),
                *va.build(clock),
                *identities.build(clock),
            ]
        )
    )
