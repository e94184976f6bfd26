"""The official R4 JSON Schema layer, with the corrections its loaded copy gets."""

from __future__ import annotations

import pytest

from fhir_server.validation import KNOWN_RESOURCE_TYPES
from fhir_server.validation.r4_schema import SchemaChecker, load_schema
from fhir_server.validation.r4_schema_fixes import corrected_definitions


@pytest.fixture(scope="module")
def schema() -> SchemaChecker:
    return SchemaChecker(KNOWN_RESOURCE_TYPES)


def test_vendored_schema_is_the_r4_one() -> None:
    raw = load_schema()
    assert raw["$schema"] == "http://json-schema.org/draft-06/schema#"
    assert len(raw["discriminator"]["mapping"]) == 146


def test_corrections_leave_the_loaded_schema_untouched() -> None:
    raw = load_schema()["definitions"]
    fixed = corrected_definitions(raw)
    assert "oneOf" in raw["ResourceList"]
    assert "_baseDefinition" not in raw["StructureDefinition"]["properties"]
    assert "_baseDefinition" in fixed["StructureDefinition"]["properties"]
    assert "4.0.1" in fixed["StructureDefinition"]["properties"]["fhirVersion"]["enum"]
    assert "4.0.1" in fixed["ImplementationGuide"]["properties"]["fhirVersion"]["items"]["enum"]


def test_fhir_version_4_0_1_is_accepted(schema: SchemaChecker) -> None:
    capability = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2024-01-01",
        "kind": "instance",
        "fhirVersion": "4.0.1",
        "format": ["json"],
    }
    assert schema.check(capability) == []


def test_canonical_may_carry_extensions(schema: SchemaChecker) -> None:
    resource = {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "medicationCodeableConcept": {"text": "x"},
        "instantiatesCanonical": ["http://example.org/PlanDefinition/x"],
        "_instantiatesCanonical": [
            {"extension": [{"url": "http://example.org/e", "valueString": "y"}]}
        ],
    }
    assert schema.check(resource) == []


@pytest.mark.parametrize(
    ("text", "valid"),
    [("BS,\u00a0DVM", True), ("plain", True), ("", False), ("   ", True)],
)
def test_string_pattern_has_xml_schema_semantics(
    schema: SchemaChecker, text: str, valid: bool
) -> None:
    findings = schema.check({"resourceType": "Patient", "name": [{"text": text}]})
    assert (findings == []) is valid


def test_nested_resources_are_checked_against_their_own_type(schema: SchemaChecker) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"resource": {"resourceType": "Patient", "gender": "x"}},
            {
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "x"},
                    "bogus": 1,
                }
            },
        ],
    }
    found = {(f.code, f.path) for f in schema.check(bundle)}
    assert found == {
        ("value", ("entry", 0, "resource", "gender")),
        ("structure", ("entry", 1, "resource", "bogus")),
    }


def test_validators_are_built_per_type_on_first_use(schema: SchemaChecker) -> None:
    checker = SchemaChecker(KNOWN_RESOURCE_TYPES)
    assert checker._validators == {}
    checker.check({"resourceType": "Patient"})
    assert set(checker._validators) == {"Patient"}
