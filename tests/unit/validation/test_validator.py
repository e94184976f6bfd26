"""Validator.check and Validator.validate: one readable issue per fault, at the right place."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from fhir_server.errors import BadRequest, Unprocessable
from fhir_server.validation import Validator

PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "p1",
    "active": True,
    "name": [{"family": "Chalmers", "given": ["Peter", "James"]}],
    "gender": "male",
    "birthDate": "1974-12-25",
}
OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "o1",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
    "subject": {"reference": "Patient/p1"},
    "effectiveDateTime": "2024-05-01T10:00:00Z",
    "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org"},
}


def changed(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


@pytest.mark.parametrize("resource", [PATIENT, OBSERVATION], ids=["Patient", "Observation"])
def test_valid_resources_have_no_issues(validator: Validator, resource: dict[str, Any]) -> None:
    assert validator.check(resource) == []
    validator.validate(resource)


# (id, resource, code, expression): each fault gives exactly one issue.
INVALID = [
    (
        "unknown element",
        changed(PATIENT, name=[{"family": "Chalmers", "nickname": "Pete"}]),
        "structure",
        "Patient.name[0].nickname",
    ),
    ("unknown element at root", changed(PATIENT, colour="blue"), "structure", "Patient.colour"),
    ("wrong type: string for list", changed(PATIENT, name="Chalmers"), "structure", "Patient.name"),
    (
        "wrong type: number for string",
        changed(PATIENT, name=[{"given": ["Peter", 5]}]),
        "structure",
        "Patient.name[0].given[1]",
    ),
    (
        "missing required status",
        changed(OBSERVATION, status=None),
        "required",
        "Observation.status",
    ),
    ("missing required code", changed(OBSERVATION, code=None), "required", "Observation.code"),
    ("bad code", changed(PATIENT, gender="unknown-x"), "value", "Patient.gender"),
    ("bad date", changed(PATIENT, birthDate="2020-13-45"), "value", "Patient.birthDate"),
    (
        "bad dateTime",
        changed(OBSERVATION, effectiveDateTime="yesterday"),
        "value",
        "Observation.effectiveDateTime",
    ),
    (
        "two value[x]",
        changed(OBSERVATION, valueString="72"),
        "structure",
        "Observation.value[x]",
    ),
    (
        "two value[x] in a component",
        changed(
            OBSERVATION,
            component=[{"code": {"text": "x"}, "valueString": "a", "valueBoolean": True}],
        ),
        "structure",
        "Observation.component[0].value[x]",
    ),
    (
        "null in a list (both layers, two depths)",
        changed(PATIENT, name=[None]),
        "structure",
        "Patient.name",
    ),
    ("string for boolean", changed(PATIENT, active="true"), "structure", "Patient.active"),
    ("null value", changed(PATIENT, gender=None) | {"gender": None}, "value", "Patient.gender"),
    ("bad id", changed(PATIENT, id="a b"), "value", "Patient.id"),
    (
        "string for integer",
        changed(PATIENT, multipleBirthInteger="3"),
        "structure",
        "Patient.multipleBirthInteger",
    ),
    (
        "bad code in a contained resource",
        changed(PATIENT, contained=[changed(OBSERVATION, status="done")]),
        "value",
        "Patient.contained[0].status",
    ),
    (
        "missing status in a bundle entry",
        {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": PATIENT}, {"resource": changed(OBSERVATION, status=None)}],
        },
        "required",
        "Bundle.entry[1].resource.status",
    ),
    (
        "unsupported nested resource type",
        {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": {"resourceType": "MedicinalProduct"}}],
        },
        "not-supported",
        "Bundle.entry[0].resource",
    ),
    (
        "nested resource without resourceType",
        {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"id": "x"}}]},
        "required",
        "Bundle.entry[0].resource.resourceType",
    ),
]


@pytest.mark.parametrize(
    ("resource", "code", "expression"),
    [case[1:] for case in INVALID],
    ids=[case[0] for case in INVALID],
)
def test_each_fault_gives_one_issue(
    validator: Validator, resource: dict[str, Any], code: str, expression: str
) -> None:
    issues = validator.check(resource)
    assert [(i.code, i.expression) for i in issues] == [(code, (expression,))], issues
    assert all(i.severity == "error" and i.diagnostics for i in issues)


def test_diagnostics_name_the_unknown_element(validator: Validator) -> None:
    [issue] = validator.check(changed(PATIENT, colour="blue"))
    assert "colour" in issue.diagnostics


def test_two_faults_give_two_issues(validator: Validator) -> None:
    issues = validator.check(changed(PATIENT, gender="x", birthDate="1974-13-01"))
    assert sorted(i.expression[0] for i in issues) == ["Patient.birthDate", "Patient.gender"]


@pytest.mark.parametrize(
    ("resource", "code"),
    [
        ([], "structure"),
        ("Patient", "structure"),
        ({"id": "x"}, "required"),
        ({"resourceType": 5}, "required"),
        ({"resourceType": "Foo"}, "not-supported"),
        ({"resourceType": "SubscriptionTopic"}, "not-supported"),  # R4B only
        ({"resourceType": "MedicinalProduct"}, "not-supported"),  # R4 only, gone in R4B
    ],
)
def test_not_a_known_resource(validator: Validator, resource: Any, code: str) -> None:
    [issue] = validator.check(resource)
    assert issue.code == code
    assert validator.check_profiles(resource) == []


def test_validate_raises_bad_request_with_the_issues(validator: Validator) -> None:
    with pytest.raises(BadRequest) as caught:
        validator.validate(changed(PATIENT, gender="unknown-x"))
    assert caught.value.status == 400
    assert [i.expression for i in caught.value.issues] == [("Patient.gender",)]
    assert caught.value.outcome()["issue"][0]["code"] == "value"


def test_validate_raises_unprocessable_on_a_profile_failure(validator: Validator) -> None:
    resource = changed(
        PATIENT, meta={"profile": ["https://mhs.example.org/fhir/StructureDefinition/mhs-patient"]}
    )
    with pytest.raises(Unprocessable) as caught:
        validator.validate(resource)
    assert caught.value.status == 422
    assert caught.value.issues[0].expression == ("Patient.identifier",)


def test_structure_is_checked_before_profiles(validator: Validator) -> None:
    resource = changed(
        PATIENT,
        gender="unknown-x",
        meta={"profile": ["https://mhs.example.org/fhir/StructureDefinition/mhs-patient"]},
    )
    with pytest.raises(BadRequest):
        validator.validate(resource)


def test_check_does_not_change_the_resource(validator: Validator) -> None:
    resource = changed(OBSERVATION, valueString="72")
    before = copy.deepcopy(resource)
    validator.check(resource)
    validator.check_profiles(resource)
    assert resource == before


def test_primitive_extensions_are_accepted(validator: Validator) -> None:
    translation = {
        "extension": [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/translation",
                "extension": [
                    {"url": "lang", "valueCode": "nl"},
                    {"url": "content", "valueString": "hartslag"},
                ],
            }
        ]
    }
    resource = changed(
        OBSERVATION,
        _status={"extension": [{"url": "http://example.org/x", "valueString": "y"}]},
        extension=[
            {"url": "http://example.org/note", "valueString": "pulse", "_valueString": translation}
        ],
    )
    assert validator.check(resource) == []


def test_required_primitive_may_be_an_extension_only(validator: Validator) -> None:
    # https://hl7.org/fhir/R4/extensibility.html#Special-Case
    resource = changed(
        OBSERVATION,
        status=None,
        _status={
            "extension": [
                {
                    "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                    "valueCode": "unknown",
                }
            ]
        },
    )
    assert validator.check(resource) == []
