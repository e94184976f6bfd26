"""The synthetic population: determinism, ages relative to today, references, coverage of
the scenarios the access policy and the portal need, and structural validity."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from seed_data.common import EDIPI, MHS_PATIENT_PROFILE, VA_SOURCE, age_on
from seed_data.directory import PEOPLE
from seed_data.population import FIXTURE_TYPES, FIXTURES, build_population

ROOT = Path(__file__).resolve().parents[3]

TODAY = date(2026, 11, 22)
# Ordinary days, the end of February in a common and a leap year, and the leap day itself.
DAYS = [TODAY, date(2030, 2, 28), date(2029, 2, 28), date(2028, 2, 29), date(2027, 12, 31)]
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
ID = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")

Resource = dict[str, Any]


@pytest.fixture(scope="module")
def population() -> list[Resource]:
    return build_population(TODAY)


@pytest.fixture(scope="module")
def index(population: list[Resource]) -> dict[str, Resource]:
    return {f"{r['resourceType']}/{r['id']}": r for r in population}


def of_type(population: list[Resource], resource_type: str) -> list[Resource]:
    return [r for r in population if r["resourceType"] == resource_type]


def references(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        if isinstance(value.get("reference"), str):
            yield value["reference"]
        for item in value.values():
            yield from references(item)
    elif isinstance(value, list):
        for item in value:
            yield from references(item)


def security(resource: Resource) -> set[tuple[str, str]]:
    return {(c["system"], c["code"]) for c in resource.get("meta", {}).get("security", [])}


def about(resource: Resource, patient_id: str) -> bool:
    target = f"Patient/{patient_id}"
    fields = ("subject", "patient", "for")
    actors = (p.get("actor", {}) for p in resource.get("participant", []))
    return any(resource.get(f, {}).get("reference") == target for f in fields) or any(
        a.get("reference") == target for a in actors
    )


def birth(population: list[Resource], key: str) -> date:
    patient = next(r for r in of_type(population, "Patient") if r["id"] == PEOPLE[key].id)
    return date.fromisoformat(patient["birthDate"])


# --- determinism and identity -------------------------------------------------------------


def test_same_day_gives_identical_population() -> None:
    assert build_population(TODAY) == build_population(TODAY)


def test_ids_do_not_depend_on_the_day(population: list[Resource]) -> None:
    later = build_population(TODAY + timedelta(days=37))
    assert [(r["resourceType"], r["id"]) for r in later] == [
        (r["resourceType"], r["id"]) for r in population
    ]


def test_ids_are_unique_readable_and_fit_fhir(population: list[Resource]) -> None:
    keys = [f"{r['resourceType']}/{r['id']}" for r in population]
    assert len(keys) == len(set(keys))
    for r in population:
        assert ID.match(r["id"]) and len(r["id"]) <= 64, r["id"]


def test_size_and_types(population: list[Resource]) -> None:
    types = {r["resourceType"] for r in population}
    assert 150 <= len(population) <= 400
    assert {
        "Patient", "RelatedPerson", "Consent", "Practitioner", "PractitionerRole",
        "Organization", "Location", "CareTeam", "Schedule", "Slot", "Appointment",
        "Encounter", "Observation", "DiagnosticReport", "DocumentReference", "Immunization",
        "AllergyIntolerance", "Condition", "MedicationRequest", "Communication",
        "Questionnaire", "QuestionnaireResponse", "Provenance", "Group",
    } <= types  # fmt: skip


def test_every_reference_resolves(population: list[Resource], index: dict[str, Resource]) -> None:
    for r in population:
        for ref in references(r):
            assert ref in index or ref.startswith(("http://", "https://")), (r["id"], ref)


def test_questionnaire_responses_answer_known_questionnaires(population: list[Resource]) -> None:
    urls = {q["url"] for q in of_type(population, "Questionnaire")}
    for qr in of_type(population, "QuestionnaireResponse"):
        assert qr["questionnaire"] in urls


def test_fixtures_exist_with_their_type(index: dict[str, Resource]) -> None:
    assert FIXTURES.keys() == FIXTURE_TYPES.keys()
    for key, id_ in FIXTURES.items():
        assert f"{FIXTURE_TYPES[key]}/{id_}" in index, key


# --- people and ages ----------------------------------------------------------------------


@pytest.mark.parametrize("today", DAYS, ids=str)
def test_ages_are_relative_to_today(today: date) -> None:
    population = build_population(today)
    for key, person in PEOPLE.items():
        assert age_on(birth(population, key), today) == person.age, (today, key)
    assert age_on(birth(population, "liam"), today) < 12
    assert 12 <= age_on(birth(population, "sophia"), today) <= 17
    for adult in ("emma", "daniel", "james", "maria"):
        assert age_on(birth(population, adult), today) >= 18


@pytest.mark.parametrize("today", DAYS, ids=str)
def test_minors_stay_minors_for_months_after_seeding(today: date) -> None:
    population = build_population(today)
    for later in range(0, 240, 7):
        day = today + timedelta(days=later)
        assert age_on(birth(population, "liam"), day) < 12
        assert 12 <= age_on(birth(population, "sophia"), day) <= 17


def test_patients_carry_edipi_and_profile(population: list[Resource]) -> None:
    edipis = set()
    for patient in of_type(population, "Patient"):
        assert patient["meta"]["profile"] == [MHS_PATIENT_PROFILE]
        [edipi] = [i["value"] for i in patient["identifier"] if i["system"] == EDIPI]
        assert re.fullmatch(r"\d{10}", edipi)
        edipis.add(edipi)
    # Everyone of the directory, and the unlinked beneficiary (seed_data/identities.py).
    assert len(edipis) == len(PEOPLE) + 1


def test_parents_are_related_persons_of_each_dependent(population: list[Resource]) -> None:
    related = of_type(population, "RelatedPerson")
    for child in ("emma", "daniel", "sophia", "liam"):
        codes = {
            c["code"]
            for rp in related
            if rp["patient"]["reference"] == f"Patient/{PEOPLE[child].id}"
            for rel in rp["relationship"]
            for c in rel["coding"]
        }
        assert {"FTH", "MTH"} <= codes, child
    sponsor = next(p for p in of_type(population, "Patient") if p["id"] == FIXTURES["sponsor"])
    linked = {link["other"]["reference"] for link in sponsor["link"]}
    assert f"RelatedPerson/{FIXTURES['grant-relatedperson']}" in linked


def test_grants_are_consents_with_a_related_person_actor(
    population: list[Resource], index: dict[str, Resource]
) -> None:
    def active_grants(patient_id: str) -> list[Resource]:
        return [
            c
            for c in of_type(population, "Consent")
            if c["status"] == "active" and c["patient"]["reference"] == f"Patient/{patient_id}"
        ]

    [grant] = active_grants(FIXTURES["adult-dependent-granted"])
    [actor] = grant["provision"]["actor"]
    related = index[actor["reference"]["reference"]]
    assert related["resourceType"] == "RelatedPerson"
    assert related["patient"]["reference"] == f"Patient/{FIXTURES['adult-dependent-granted']}"
    sponsor = index[f"Patient/{FIXTURES['sponsor']}"]
    assert related["identifier"][0]["value"] == sponsor["identifier"][0]["value"]
    assert active_grants(FIXTURES["adult-dependent-no-grant"]) == []
    revoked = index[f"Consent/{FIXTURES['revoked-consent']}"]
    assert revoked["status"] == "inactive"
    assert revoked["patient"]["reference"] == f"Patient/{FIXTURES['adult-dependent-no-grant']}"


def test_each_patient_has_a_care_team_with_pcm_and_nurse_pool(
    population: list[Resource], index: dict[str, Resource]
) -> None:
    teams = [t for t in of_type(population, "CareTeam") if "subject" in t]
    assert {t["subject"]["reference"] for t in teams} == {
        f"Patient/{p.id}" for p in PEOPLE.values()
    }
    for team in teams:
        members = [index[p["member"]["reference"]] for p in team["participant"]]
        assert any(m["resourceType"] == "Practitioner" for m in members)
        assert any(m["resourceType"] == "CareTeam" for m in members)


# --- the adolescent's sensitive records ---------------------------------------------------


def test_adolescent_has_records_labelled_sensitive(population: list[Resource]) -> None:
    sophia = [r for r in population if about(r, FIXTURES["adolescent"])]
    sex_std = [
        r
        for r in sophia
        if {(ACT_CODE, "SEX"), (ACT_CODE, "STD"), (CONFIDENTIALITY, "R")} <= security(r)
    ]
    assert {r["resourceType"] for r in sex_std} >= {"Observation", "DiagnosticReport", "Condition"}
    psy = [r for r in sophia if {(ACT_CODE, "PSY"), (CONFIDENTIALITY, "R")} <= security(r)]
    assert {r["resourceType"] for r in psy} >= {"DocumentReference", "Condition", "Appointment"}
    assert any(r["resourceType"] == "Encounter" and security(r) for r in sophia)
    # ... and ordinary ones a proxy may be shown.
    assert any(not security(r) and r["resourceType"] == "Immunization" for r in sophia)
    assert any(not security(r) and r["resourceType"] == "Appointment" for r in sophia)


def test_sensitive_fixtures_are_labelled_and_ordinary_ones_not(index: dict[str, Resource]) -> None:
    for key, id_ in FIXTURES.items():
        resource = index[f"{FIXTURE_TYPES[key]}/{id_}"]
        if "sensitive" in key or key.startswith(("adolescent-sti", "adolescent-reproductive")):
            assert (CONFIDENTIALITY, "R") in security(resource), key
        if "ordinary" in key:
            assert security(resource) == set(), key


def test_adolescent_messages_with_care_team(
    population: list[Resource], index: dict[str, Resource]
) -> None:
    thread = [m for m in of_type(population, "Communication") if about(m, FIXTURES["adolescent"])]
    senders = {index[m["sender"]["reference"]]["resourceType"] for m in thread}
    assert senders == {"Patient", "Practitioner"}
    to_team = [m for m in thread if m["recipient"][0]["reference"].startswith("CareTeam/")]
    assert to_team and all(m["sender"]["reference"].startswith("Patient/") for m in to_team)
    assert any("inResponseTo" in m for m in thread)


def test_threads_are_chained_in_time(
    population: list[Resource], index: dict[str, Resource]
) -> None:
    for message in of_type(population, "Communication"):
        for ref in message.get("inResponseTo", []) + message.get("partOf", []):
            previous = index[ref["reference"]]
            assert previous["subject"] == message["subject"]
            assert datetime.fromisoformat(previous["sent"]) < datetime.fromisoformat(
                message["sent"]
            )


def test_one_message_has_an_attachment(population: list[Resource]) -> None:
    attachments = [
        p["contentAttachment"]
        for m in of_type(population, "Communication")
        for p in m.get("payload", [])
        if "contentAttachment" in p
    ]
    assert attachments and all(a["data"] and a["contentType"] for a in attachments)


def test_threads_are_a_header_and_its_messages(
    population: list[Resource], index: dict[str, Resource]
) -> None:
    """profiles/portal/messaging.json: a header (open, topic, coded category, no payload)
    and messages partOf it; the nurse pool has an inbox with an unread message sent long
    enough ago to be overdue (three business days)."""
    table = json.loads((ROOT / "profiles/portal/messaging.json").read_text())
    messages = of_type(population, "Communication")
    headers = [m for m in messages if "partOf" not in m]
    assert headers
    for h in headers:
        assert "payload" not in h and h["status"] == table["header"]["open_status"], h["id"]
        assert h["topic"]["text"] and h["recipient"], h["id"]
        codings = [c for concept in h["category"] for c in concept["coding"]]
        assert any(
            c["system"] == table["categories"]["system"]
            and c["code"] in table["categories"]["codes"]
            for c in codings
        ), h["id"]
    for m in messages:
        if "partOf" in m:
            head = index[m["partOf"][0]["reference"]]
            assert "partOf" not in head and m["payload"], m["id"]
    pool = f"CareTeam/{FIXTURES['nurse-pool-careteam']}"
    inbox = [m for m in messages if "partOf" in m and m["recipient"][0]["reference"] == pool]
    unread = [m for m in inbox if "received" not in m]
    assert unread, "the nurse pool has an unread message"
    oldest = min(datetime.fromisoformat(m["sent"]) for m in unread)
    assert (datetime.now(oldest.tzinfo) - oldest).days >= 7, "one message is overdue"


# --- clinical content ---------------------------------------------------------------------


def test_lab_results_have_loinc_ucum_and_reference_ranges(population: list[Resource]) -> None:
    labs = [
        o
        for o in of_type(population, "Observation")
        if o["category"][0]["coding"][0]["code"] == "laboratory" and "valueQuantity" in o
    ]
    assert len(labs) >= 15
    for obs in labs:
        assert obs["code"]["coding"][0]["system"] == "http://loinc.org"
        assert obs["valueQuantity"]["system"] == "http://unitsofmeasure.org"
        if obs["id"] != "obs-robert-polyp-size":
            assert obs["referenceRange"], obs["id"]


def test_code_systems(population: list[Resource]) -> None:
    systems = {
        "Immunization": ("vaccineCode", "http://hl7.org/fhir/sid/cvx"),
        "Condition": ("code", "http://snomed.info/sct"),
        "MedicationRequest": ("medicationCodeableConcept", "http://www.nlm.nih.gov/research/umls/rxnorm"),
    }  # fmt: skip
    for resource_type, (field, system) in systems.items():
        for r in of_type(population, resource_type):
            assert r[field]["coding"][0]["system"] == system, r["id"]


def test_reports_cover_lab_radiology_and_pathology(
    population: list[Resource], index: dict[str, Resource]
) -> None:
    categories = set()
    for report in of_type(population, "DiagnosticReport"):
        categories.add(report["category"][0]["coding"][0]["code"])
        assert report["result"]
        for result in report["result"]:
            assert index[result["reference"]]["subject"] == report["subject"]
    assert {"LAB", "RAD", "SP"} <= categories


def test_prescriptions_cover_refills_left_none_left_and_expired(
    population: list[Resource],
) -> None:
    def state(rx: Resource) -> str:
        request = rx["dispenseRequest"]
        if date.fromisoformat(request["validityPeriod"]["end"]) < TODAY:
            return "expired"
        return "refills-left" if request["numberOfRepeatsAllowed"] > 0 else "none-left"

    prescriptions = {rx["id"]: state(rx) for rx in of_type(population, "MedicationRequest")}
    assert set(prescriptions.values()) == {"refills-left", "none-left", "expired"}
    assert prescriptions[FIXTURES["medication-refills-left"]] == "refills-left"
    assert prescriptions[FIXTURES["medication-no-refills-left"]] == "none-left"
    assert prescriptions[FIXTURES["medication-expired"]] == "expired"


def test_va_records_have_provenance_from_a_va_organization(
    population: list[Resource], index: dict[str, Resource]
) -> None:
    from_va = {
        f"{r['resourceType']}/{r['id']}"
        for r in population
        if r.get("meta", {}).get("source") == VA_SOURCE
    }
    assert len(from_va) >= 5
    provenance = index[f"Provenance/{FIXTURES['veteran-va-provenance']}"]
    assert {t["reference"] for t in provenance["target"]} == from_va
    agents = {a["who"]["reference"] for a in provenance["agent"]}
    assert f"Organization/{FIXTURES['va-organization']}" in agents


# --- scheduling ---------------------------------------------------------------------------


def _moment(value: str) -> date:
    return date.fromisoformat(value[:10])


def test_future_slots_are_free_and_busy(population: list[Resource]) -> None:
    slots = of_type(population, "Slot")
    assert all(_moment(s["start"]) > TODAY for s in slots)
    statuses = {s["status"] for s in slots}
    assert {"free", "busy"} <= statuses
    horizon = max(_moment(s["start"]) for s in slots)
    assert horizon >= TODAY + timedelta(days=12)


def test_booked_appointments_hold_busy_slots(
    population: list[Resource], index: dict[str, Resource]
) -> None:
    booked = [a for a in of_type(population, "Appointment") if a["status"] == "booked"]
    assert booked
    for appointment in booked:
        [slot_ref] = appointment["slot"]
        slot = index[slot_ref["reference"]]
        assert slot["status"] == "busy"
        assert (slot["start"], slot["end"]) == (appointment["start"], appointment["end"])


def test_appointments_past_future_booked_and_requested(population: list[Resource]) -> None:
    appointments = of_type(population, "Appointment")
    statuses = {a["status"] for a in appointments}
    assert {"booked", "proposed", "fulfilled", "cancelled", "noshow"} <= statuses
    assert any(a["status"] == "fulfilled" and _moment(a["start"]) < TODAY for a in appointments)
    assert any(a["status"] == "booked" and _moment(a["start"]) > TODAY for a in appointments)
    for requested in (a for a in appointments if a["status"] == "proposed"):
        assert "start" not in requested and requested["requestedPeriod"]


# --- validation by the server's own validator ---------------------------------------------


def test_every_resource_passes_the_server_validation(population: list[Resource]) -> None:
    from fhir_server.validation import Validator

    validator = Validator()
    for resource in population:
        assert validator.check(resource) == [], resource["id"]
        assert validator.check_profiles(resource) == [], resource["id"]


def test_every_seed_care_team_is_marked_as_maintained_by_the_organisation(population):
    from fhir_server.access.care_team import load_table

    table = load_table()
    teams = of_type(population, "CareTeam")
    assert teams and all(table.maintained(t) for t in teams)
    assert not table.maintained({"resourceType": "CareTeam"})
