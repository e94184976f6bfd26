"""Table-driven tests of the search parser (no I/O)."""

from __future__ import annotations

import pytest

from fhir_server.errors import BadRequest, NotSupported
from fhir_server.search.parse import Include, SearchValue, SortKey, parse_search, split_escaped
from fhir_server.search.registry import Registry


@pytest.fixture(scope="module")
def reg() -> Registry:
    return Registry.load_default()


OK = [
    ("Observation", [("code", "a,b")], "code", "token", None, (SearchValue("a"), SearchValue("b"))),
    ("Observation", [("date", "ge2015")], "date", "date", None, (SearchValue("2015", "ge"),)),
    (
        "Observation",
        [("date", "2015-01-02")],
        "date",
        "date",
        None,
        (SearchValue("2015-01-02", "eq"),),
    ),
    (
        "Observation",
        [("value-quantity", "lt5.4|http://unitsofmeasure.org|mg")],
        "value-quantity",
        "quantity",
        None,
        (SearchValue("5.4|http://unitsofmeasure.org|mg", "lt"),),
    ),
    ("Patient", [("name:exact", "Eve")], "name", "string", "exact", (SearchValue("Eve"),)),
    ("Patient", [("name:contains", "v")], "name", "string", "contains", (SearchValue("v"),)),
    ("Observation", [("code:text", "x")], "code", "token", "text", (SearchValue("x"),)),
    ("Observation", [("code:not", "x")], "code", "token", "not", (SearchValue("x"),)),
    ("Observation", [("code:missing", "true")], "code", "token", "missing", (SearchValue("true"),)),
    (
        "Observation",
        [("subject:identifier", "s|1")],
        "subject",
        "reference",
        "identifier",
        (SearchValue("s|1"),),
    ),
    (
        "Observation",
        [("_profile:below", "http://x")],
        "_profile",
        "uri",
        "below",
        (SearchValue("http://x"),),
    ),
    ("Observation", [("code", "a\\,b")], "code", "token", None, (SearchValue("a\\,b"),)),
]


@pytest.mark.parametrize(("rt", "params", "code", "type_", "modifier", "values"), OK)
def test_parses(reg, rt, params, code, type_, modifier, values):
    c = parse_search(rt, params, reg).criteria[0]
    assert (c.code, c.type, c.modifier, c.values) == (code, type_, modifier, values)


BAD = [
    ("Patient", [("nope", "1")], BadRequest),
    ("Patient", [("birthdate", "1999-13-45")], BadRequest),
    ("Observation", [("value-quantity", "abc")], BadRequest),
    ("Observation", [("code:exact", "x")], NotSupported),
    ("Patient", [("name:missing", "maybe")], BadRequest),
    ("Patient", [("_count", "-1")], BadRequest),
    ("Patient", [("_summary", "all")], BadRequest),
    ("Patient", [("_total", "exact")], BadRequest),
    ("Patient", [("_totalMethod", "exact")], BadRequest),
    ("Patient", [("_sort", "nope")], BadRequest),
    ("Patient", [("_include", "Patient:name")], BadRequest),
    ("Patient", [("_query", "x")], NotSupported),
    ("Patient", [("_has:Observation:code:code", "x")], BadRequest),
    ("Observation", [("subject:Device.name", "x")], BadRequest),
    ("Observation", [("code-value-quantity", "onlyone")], BadRequest),
    ("Nope", [("x", "1")], BadRequest),
]


@pytest.mark.parametrize(("rt", "params", "err"), BAD)
def test_strict_errors(reg, rt, params, err):
    with pytest.raises(err):
        parse_search(rt, params, reg)


def test_lenient_drops_and_records(reg):
    req = parse_search(
        "Patient", [("nope", "1"), ("gender", "male"), ("_count", "x")], reg, strict=False
    )
    assert [n for n, _, _ in req.dropped] == ["nope", "_count"]
    assert req.used == (("gender", "male"),)


def test_control_parameters(reg):
    req = parse_search(
        "Observation",
        [
            ("_sort", "-date,code"),
            ("_count", "5000"),
            ("_summary", "data"),
            ("_elements", "status"),
            ("_total", "accurate"),
            ("_include", "Observation:subject:Patient"),
            ("_revinclude:iterate", "Provenance:target"),
        ],
        reg,
    )
    assert req.sort == (SortKey("date", True), SortKey("code"))
    assert req.count == 1000  # capped
    assert (req.summary, req.elements, req.total) == ("data", ("status",), "accurate")
    assert req.includes == (Include("Observation", "subject", "Patient"),)
    assert req.revincludes == (Include("Provenance", "target", None, True),)


def test_chain_and_has(reg):
    c = parse_search("Observation", [("subject:Patient.organization.name", "x")], reg).criteria[0]
    assert c.target_types == ("Patient",)
    inner = c.chain[0][1]
    assert inner.code == "organization" and inner.chain[0][0] == "Organization"
    h = parse_search(
        "Patient", [("_has:Observation:patient:_has:AuditEvent:entity:agent", "x")], reg
    ).criteria[0]
    assert h.has and h.has.source_type == "Observation" and h.has.inner.has
    assert h.has.inner.has.source_type == "AuditEvent"


def test_and_combines(reg):
    user = parse_search("Observation", [("code", "x"), ("_count", "3")], reg)
    policy = parse_search("Observation", [("subject", "Patient/p1")], reg)
    both = user.and_(policy)
    assert [c.code for c in both.criteria] == ["code", "subject"] and both.count == 3
    assert both.used == user.used  # the policy never shows in the self link
    with pytest.raises(BadRequest):
        user.and_(parse_search("Patient", [], reg))


def test_split_escaped():
    assert split_escaped("a\\,b,c", ",") == ["a\\,b", "c"]
    assert split_escaped("s|c\\|d", "|") == ["s", "c\\|d"]


def test_registry(reg):
    assert len(reg.params_for("Observation")) > 30
    assert reg.get("Patient", "_id") is not None
    assert "subject" in reg.compartment_params("Observation")
    custom = {
        "resourceType": "SearchParameter",
        "url": "http://x/sp",
        "code": "nickname",
        "base": ["Patient"],
        "type": "string",
        "expression": "Patient.name.where(use='nickname').given",
    }
    reg2 = Registry.load_default()
    reg2.add(custom)
    assert reg2.get("Patient", "nickname") is not None and reg.get("Patient", "nickname") is None


@pytest.mark.parametrize(
    ("value", "total"), [("count", "accurate"), ("estimate", "estimate"), ("none", "none")]
)
def test_fhirpys_total_method_is_an_alias_of_total(reg: Registry, value: str, total: str) -> None:
    req = parse_search("Patient", [("_count", "0"), ("_totalMethod", value)], reg)
    assert (req.count, req.total) == (0, total)
    # `_total` itself, when a client sends both, wins.
    both = parse_search("Patient", [("_total", "none"), ("_totalMethod", value)], reg)
    assert both.total == "none"
