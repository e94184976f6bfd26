"""The compartment-inheritance table (profiles/access/compartments.json) parses fail-fast."""

from __future__ import annotations

import pytest

from fhir_server.access.compartments import load_table, parse_table
from fhir_server.validation import KNOWN_RESOURCE_TYPES


def test_the_shipped_table_names_provenance_target():
    table = load_table(known_types=KNOWN_RESOURCE_TYPES)
    assert table.types == {"Provenance"}
    assert dict(table.elements)["Provenance"] == ("target",)


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
    ],
)
def test_a_malformed_table_stops_the_server(raw):
    with pytest.raises(ValueError):
        parse_table(raw, KNOWN_RESOURCE_TYPES)
