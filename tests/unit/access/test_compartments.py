"""The compartment-inheritance table (profiles/access/compartments.json) parses fail-fast."""

from __future__ import annotations

import pytest

from fhir_server.access.compartments import (
    compartment_types,
    extend_registry,
    load_table,
    parse_table,
)
from fhir_server.search.extract import compartments
from fhir_server.search.registry import Registry
from fhir_server.validation import KNOWN_RESOURCE_TYPES


def test_the_shipped_table_names_provenance_target_and_binary_security_context():
    table = load_table(known_types=KNOWN_RESOURCE_TYPES)
    assert table.types == {"Provenance", "Binary"}
    assert dict(table.elements)["Provenance"] == ("target",)
    assert dict(table.elements)["Binary"] == ("securityContext",)
    assert dict(table.added) == {"Task": ("patient",)}


def test_added_parameters_extend_the_compartment_definition():
    registry = Registry.load_default()
    assert registry.compartment_params("Task") == ()
    extend_registry(registry, load_table(known_types=KNOWN_RESOURCE_TYPES))
    assert registry.compartment_params("Task") == ("patient",)
    task = {"resourceType": "Task", "for": {"reference": "Patient/p"}}
    assert compartments(task, registry) == ["Patient/p"]
    # `for` naming something else than a Patient places the Task nowhere.
    assert compartments({**task, "for": {"reference": "Group/g"}}, registry) == []
    # A fresh registry is untouched (the vendored definition is shared).
    assert Registry.load_default().compartment_params("Task") == ()
    types = compartment_types(registry, load_table(known_types=KNOWN_RESOURCE_TYPES))
    assert {"Task", "Binary", "Provenance", "Patient", "Observation"} <= types
    assert "Practitioner" not in types


@pytest.mark.parametrize(
    "added",
    [
        {"Task": ["owner-typo"]},
        {"Task": ["status"]},
        {"Task": ["focus"]},
        {"Observation": ["code"]},
    ],
)
def test_an_added_parameter_must_be_a_reference_that_can_name_a_patient(added):
    # focus may name a Patient in R4 (Reference(Any)): only a typo or a token is refused.
    table = parse_table({"inherit": {}, "add": added}, KNOWN_RESOURCE_TYPES)
    if added == {"Task": ["focus"]}:
        extend_registry(Registry.load_default(), table)
        return
    with pytest.raises(ValueError):
        extend_registry(Registry.load_default(), table)


def test_sources_are_local_references_of_the_listed_elements():
    table = parse_table({"inherit": {"Provenance": ["target", "entity"]}})
    prov = {
        "resourceType": "Provenance",
        "id": "p",
        "target": [
            {"reference": "Observation/x"},
            {"reference": "Patient/y/_history/2"},
            {"reference": "urn:uuid:0c3d"},
            {"reference": "https://elsewhere.example/fhir/Observation/z"},
            {"reference": "Provenance/p"},
            {"display": "no reference"},
            {"reference": "Observation/x"},
        ],
        "entity": {"reference": "DocumentReference/d"},
        "location": {"reference": "Location/l"},
    }
    assert table.sources(prov) == ["Observation/x", "Patient/y", "DocumentReference/d"]
    assert (
        table.sources({"resourceType": "Observation", "subject": {"reference": "Patient/a"}}) == []
    )


@pytest.mark.parametrize(
    "raw",
    [
        [],
        {},
        {"inherit": []},
        {"inherit": {"Provenance": []}},
        {"inherit": {"Provenance": "target"}},
        {"inherit": {"Provenance": ["target.reference"]}},
        {"inherit": {"Provenance": [3]}},
        {"inherit": {"Provenence": ["target"]}},
        {"inherit": {}, "add": []},
        {"inherit": {}, "add": {"Task": "patient"}},
        {"inherit": {}, "add": {"Tusk": ["patient"]}},
    ],
)
def test_a_malformed_table_stops_the_server(raw):
    with pytest.raises(ValueError):
        parse_table(raw, KNOWN_RESOURCE_TYPES)
