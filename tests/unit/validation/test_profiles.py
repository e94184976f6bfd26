"""The project's JSON Schema profiles, selected by meta.profile."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fhir_server.validation import Validator
from fhir_server.validation.profiles import ProfileError
from fhir_server.validation.validator import DEFAULT_PROFILES_DIR

MHS_PATIENT = "https://mhs.example.org/fhir/StructureDefinition/mhs-patient"
EDIPI = "http://mhs.example.org/fhir/sid/edipi"


def patient(
    *identifiers: dict[str, Any], profiles: tuple[str, ...] = (MHS_PATIENT,)
) -> dict[str, Any]:
    out: dict[str, Any] = {"resourceType": "Patient", "meta": {"profile": list(profiles)}}
    if identifiers:
        out["identifier"] = list(identifiers)
    return out


def test_profile_urls(validator: Validator) -> None:
    assert validator.profile_urls() == [MHS_PATIENT]


# (id, resource, [(code, expression)])
CASES = [
    ("with EDIPI", patient({"system": EDIPI, "value": "1234567890"}), []),
    (
        "EDIPI beside other identifiers",
        patient(
            {"system": "urn:oid:2.16.840.1.113883.4.1", "value": "123-45-6789"},
            {"system": EDIPI, "value": "1234567890"},
        ),
        [],
    ),
    (
        "versioned canonical",
        patient({"system": EDIPI, "value": "1234567890"}, profiles=(MHS_PATIENT + "|0.1.0",)),
        [],
    ),
    ("no identifier", patient(), [("required", "Patient.identifier")]),
    ("no EDIPI", patient({"system": "urn:x", "value": "1"}), [("required", "Patient.identifier")]),
    (
        "EDIPI of 9 digits",
        patient({"system": EDIPI, "value": "123456789"}),
        [("value", "Patient.identifier[0].value")],
    ),
    (
        "EDIPI without value",
        patient({"system": EDIPI}),
        [("required", "Patient.identifier[0].value")],
    ),
    (
        "two EDIPIs",
        patient({"system": EDIPI, "value": "1234567890"}, {"system": EDIPI, "value": "1234567891"}),
        [("structure", "Patient.identifier")],
    ),
    (
        "unknown profile is ignored",
        patient(profiles=("http://example.org/StructureDefinition/other",)),
        [],
    ),
    ("no meta.profile", {"resourceType": "Patient"}, []),
]


@pytest.mark.parametrize(
    ("resource", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_mhs_patient_profile(
    validator: Validator, resource: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    issues = validator.check_profiles(resource)
    assert [(i.code, i.expression[0]) for i in issues] == expected
    assert all("MHS Patient" in i.diagnostics for i in issues)
    assert validator.check(resource) == []


def test_missing_edipi_diagnostics_say_what_is_needed(validator: Validator) -> None:
    [issue] = validator.check_profiles(patient({"system": "urn:x", "value": "1"}))
    assert EDIPI in issue.diagnostics


def test_every_schema_profile_has_a_valid_structure_definition(validator: Validator) -> None:
    definitions = {}
    for path in DEFAULT_PROFILES_DIR.glob("StructureDefinition-*.json"):
        sd = json.loads(path.read_text(encoding="utf-8"))
        assert validator.check(sd) == [], path.name
        assert sd["fhirVersion"] == "4.0.1"
        definitions[sd["url"]] = sd
    assert set(validator.profile_urls()) <= set(definitions)
    assert definitions[MHS_PATIENT]["type"] == "Patient"


def test_profiles_dir_can_be_chosen(tmp_path: Path) -> None:
    schema = {"$id": "https://example.org/p", "required": ["active"], "title": "P"}
    (tmp_path / "p.schema.json").write_text(json.dumps(schema), encoding="utf-8")
    (tmp_path / "policy-table.json").write_text("{}", encoding="utf-8")  # not a profile
    validator = Validator(profiles_dir=tmp_path)
    assert validator.profile_urls() == ["https://example.org/p"]
    [issue] = validator.check_profiles(
        {"resourceType": "Patient", "meta": {"profile": ["https://example.org/p"]}}
    )
    assert (issue.code, issue.expression) == ("required", ("Patient.active",))


@pytest.mark.parametrize(
    "content",
    ["{not json", json.dumps({"type": "object"}), json.dumps({"$id": "https://x", "type": 5})],
    ids=["not JSON", "no $id", "invalid schema"],
)
def test_malformed_profile_fails_at_start_up(tmp_path: Path, content: str) -> None:
    (tmp_path / "bad.schema.json").write_text(content, encoding="utf-8")
    with pytest.raises(ProfileError):
        Validator(profiles_dir=tmp_path)


def test_missing_profiles_dir_fails_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(ProfileError):
        Validator(profiles_dir=tmp_path / "absent")
