"""Table-driven tests of filter building and index extraction (no I/O)."""

from __future__ import annotations

import pytest

from fhir_server.search.extract import compartments, index_entries
from fhir_server.search.parse import parse_search
from fhir_server.search.query import criterion_filter
from fhir_server.search.registry import Registry
from fhir_server.search.values import date_range, num_key


@pytest.fixture(scope="module")
def reg() -> Registry:
    return Registry.load_default()


def f(reg, rt, name, value):
    c = parse_search(rt, [(name, value)], reg).criteria[0]
    return criterion_filter(c, resource_type=rt, elem_match=True)


TABLE = [
    ("Observation", "code", "a", {"ix.k": "code=a"}),
    ("Observation", "code", "s|a", {"ix.k": "code=s|a"}),
    ("Observation", "code", "|a", {"ix.k": "code=|a"}),
    ("Observation", "code", "s|", {"ix.k": "code=s|"}),
    ("Observation", "code", "a,b", {"ix.k": {"$in": ["code=a", "code=b"]}}),
    ("Observation", "code:not", "a", {"ix.k": {"$nin": ["code=a"]}}),
    ("Observation", "code:missing", "true", {"ix.k": "code:missing"}),
    ("Observation", "subject", "Patient/1", {"ix.k": "subject=Patient/1"}),
    ("Observation", "subject:Patient", "1", {"ix.k": "subject=Patient/1"}),
    ("Patient", "_id", "1", {"_id": "Patient/1"}),
    ("Patient", "family:exact", "Éve", {"ix.k": "family:exact=Éve"}),
    (
        "Patient",
        "family",
        "ÉVE",
        {"ix.s": {"$elemMatch": {"$gte": "family|eve", "$lt": "family|eve\uffff"}}},
    ),
    (
        "Patient",
        "family",
        "a.*",
        {"ix.s": {"$elemMatch": {"$gte": "family|a.*", "$lt": "family|a.*\uffff"}}},
    ),
    ("Patient", "family:contains", "a.*", {"ix.s": {"$regex": "^family\\|.*a\\.\\*"}}),
    ("Observation", "date", "2015", {"ix.k": "date:2015"}),
    (
        "Observation",
        "date",
        "gt2015",
        {"ix.hi": {"$elemMatch": {"$gt": "date|2015-12-31T23:59:59.999Z", "$lt": "date|\uffff"}}},
    ),
    (
        "Observation",
        "date",
        "lt2015",
        {"ix.lo": {"$elemMatch": {"$gte": "date|", "$lt": "date|2015-01-01T00:00:00.000Z"}}},
    ),
    (
        "Observation",
        "_profile:above",
        "http://x/a/b",
        {"ix.k": {"$in": ["_profile=http://x/a/b", "_profile=http://x/a", "_profile=http://x"]}},
    ),
    (
        "RiskAssessment",
        "probability",
        "0.5",
        {
            "ix.lo": {
                "$elemMatch": {
                    "$gte": "probability|=" + num_key(0.45),
                    "$lt": "probability|=" + num_key(0.55),
                }
            }
        },
    ),
]


@pytest.mark.parametrize(("rt", "name", "value", "expected"), TABLE)
def test_filter(reg, rt, name, value, expected):
    assert f(reg, rt, name, value) == expected


def test_no_operator_injection(reg):
    got = f(reg, "Observation", "code", '{"$ne": 1}')
    assert got == {"ix.k": 'code={"$ne": 1}'}


def test_date_ranges():
    assert date_range("2015") == ("2015-01-01T00:00:00.000Z", "2015-12-31T23:59:59.999Z")
    assert date_range("2016-02") == ("2016-02-01T00:00:00.000Z", "2016-02-29T23:59:59.999Z")
    assert date_range("2015-01-01T10:00:00+02:00") == (
        "2015-01-01T08:00:00.000Z",
        "2015-01-01T08:00:00.999Z",
    )
    assert date_range("nope") is None


def test_num_key_orders():
    xs = [-1e9, -2.5, -1, 0.0, 1e-9, 1, 2.5, 1e9]
    assert sorted(xs, key=num_key) == xs


def test_extract_and_compartments(reg):
    obs = {
        "resourceType": "Observation",
        "id": "o",
        "status": "final",
        "code": {
            "coding": [{"system": "http://loinc.org", "code": "8302-2", "display": "Body Height"}]
        },
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2015-05-28",
        "valueQuantity": {
            "value": 1.8,
            "unit": "m",
            "system": "http://unitsofmeasure.org",
            "code": "m",
        },
    }
    ix = index_entries(obs, reg)
    assert {
        "code=8302-2",
        "code=http://loinc.org|8302-2",
        "subject=Patient/p1",
        "date:2015-05-28",
        "status=final",
    } <= set(ix["k"])
    assert "code:text|body height" in ix["s"]
    assert "date|2015-05-28T00:00:00.000Z" in ix["lo"]
    assert compartments(obs, reg) == ["Patient/p1"]
    assert compartments({"resourceType": "Patient", "id": "p2"}, reg) == ["Patient/p2"]


def test_year_one_and_year_9999_dates_keep_the_fixed_width() -> None:
    """strftime's %Y does not zero-pad year 1; the keys must still sort as instants."""
    from fhir_server.search.values import date_range

    assert date_range("0001-01-01") == ("0001-01-01T00:00:00.000Z", "0001-01-01T23:59:59.999Z")
    assert date_range("9999-12-31") == ("9999-12-31T00:00:00.000Z", "9999-12-31T23:59:59.999Z")
    # Offsets that leave datetime's range are held at its ends, not refused.
    first = "0001-01-01T00:00:00.000Z"
    assert date_range("0001-01-01T00:00:00+14:00") == (first, first)
    last = "9999-12-31T23:59:59.999Z"
    assert date_range("9999-12-31T23:59:59-14:00") == (last, last)


def test_a_quantity_that_underflows_to_zero_keeps_its_unit_factor() -> None:
    from fhir_server.search.query import quantity_unit_prefix
    from fhir_server.search.values import UCUM

    assert quantity_unit_prefix(UCUM, "mg", "1e-400") == (f"{UCUM}|g|", 1e-3)
