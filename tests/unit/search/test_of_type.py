"""Token `:of-type` on identifier parameters (https://hl7.org/fhir/R4/search.html#token):
parsing, index keys and filters, table-driven (no I/O)."""

from __future__ import annotations

import pytest

from fhir_server.errors import BadRequest, NotSupported
from fhir_server.search.extract import index_entries
from fhir_server.search.parse import parse_search
from fhir_server.search.query import criterion_filter
from fhir_server.search.registry import Registry

V2 = "http://terminology.hl7.org/CodeSystem/v2-0203"


@pytest.fixture(scope="module")
def reg() -> Registry:
    return Registry.load_default()


FILTERS = [
    ("Patient", "identifier", f"{V2}|MR|446053", {"ix.k": f"identifier:of-type={V2}|MR|446053"}),
    (
        "Patient",
        "identifier",
        f"{V2}|MR|1,{V2}|SS|2",
        {"ix.k": {"$in": [f"identifier:of-type={V2}|MR|1", f"identifier:of-type={V2}|SS|2"]}},
    ),
    # An escaped `|` belongs to the value.
    ("Patient", "identifier", "s|MR|a\\|b", {"ix.k": "identifier:of-type=s|MR|a|b"}),
    # Any identifier parameter, not only those called `identifier`.
    ("Specimen", "accession", "s|ACSN|7", {"ix.k": "accession:of-type=s|ACSN|7"}),
]


@pytest.mark.parametrize(("rt", "code", "value", "expected"), FILTERS)
def test_filter(reg: Registry, rt: str, code: str, value: str, expected: dict) -> None:
    c = parse_search(rt, [(f"{code}:of-type", value)], reg).criteria[0]
    assert c.modifier == "of-type"
    assert criterion_filter(c, resource_type=rt, elem_match=True) == expected


BAD = [
    ("Patient", "identifier:of-type", f"{V2}|MR", BadRequest),  # two parts
    ("Patient", "identifier:of-type", "446053", BadRequest),  # one part
    ("Patient", "identifier:of-type", f"{V2}||446053", BadRequest),  # empty code
    ("Patient", "identifier:of-type", "|MR|446053", BadRequest),  # empty system
    ("Patient", "identifier:of-type", f"{V2}|MR|", BadRequest),  # empty value
    ("Patient", "identifier:of-type", "a|b|c|d", BadRequest),  # four parts
    ("Patient", "gender:of-type", "a|b|c", BadRequest),  # not an Identifier
    ("Observation", "code:of-type", "a|b|c", BadRequest),
    ("Patient", "name:of-type", "a|b|c", NotSupported),  # not a token
]


@pytest.mark.parametrize(("rt", "name", "value", "err"), BAD)
def test_refused(reg: Registry, rt: str, name: str, value: str, err: type[Exception]) -> None:
    with pytest.raises(err):
        parse_search(rt, [(name, value)], reg)


def test_index_keys(reg: Registry) -> None:
    patient = {
        "resourceType": "Patient",
        "id": "p",
        "identifier": [
            {
                "type": {
                    "coding": [
                        {"system": V2, "code": "MR"},
                        {"system": "http://x", "code": "local"},
                        {"code": "no-system"},
                    ]
                },
                "system": "http://hospital",
                "value": "446053",
            },
            {"type": {"text": "no coding"}, "value": "9"},
            {"system": "http://plain", "value": "10"},
            {"type": {"coding": [{"system": V2, "code": "SS"}]}},  # no value
        ],
    }
    keys = {k for k in index_entries(patient, reg)["k"] if ":of-type=" in k}
    assert keys == {
        f"identifier:of-type={V2}|MR|446053",
        "identifier:of-type=http://x|local|446053",
    }
