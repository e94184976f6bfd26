"""Value-set expansion and code-system subsumption (token `:in`, `:not-in`, `:above`,
`:below`), table-driven, no I/O: stored ValueSets come from an in-memory lookup."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_server.errors import BadRequest, NotSupported, TooCostly
from fhir_server.search.parse import parse_search
from fhir_server.search.query import criterion_filter, in_value_sets
from fhir_server.search.registry import Registry
from fhir_server.search.valuesets import MAX_CODES, Expander, Terminology, subsumed

CC = "http://terminology.hl7.org/CodeSystem/condition-clinical"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"

# A small code system: a > (b > d), c
TERM = Terminology.from_json(
    {
        "codesystems": {
            "http://cs": {"c": {"a": [], "b": ["a"], "c": ["a"], "d": ["b"], "e": []}},
            "http://flat-grouping": {"c": {"g": [], "h": ["g"]}, "h": False},
        },
        "valuesets": {
            "http://vs/whole": {"compose": {"include": [{"system": "http://cs"}]}},
            "http://vs/is-a-b": {
                "compose": {
                    "include": [
                        {
                            "system": "http://cs",
                            "filter": [{"property": "concept", "op": "is-a", "value": "b"}],
                        }
                    ]
                }
            },
        },
        "unsupported": {"http://vs/snomed": "Value set 'http://vs/snomed' needs SNOMED CT"},
    }
)


def stored(*value_sets: dict[str, Any]):
    by_url = {vs["url"]: vs for vs in value_sets}

    async def lookup(canonical: str) -> dict[str, Any] | None:
        url, _, version = canonical.partition("|")
        vs = by_url.get(url)
        return vs if vs and (not version or vs.get("version") == version) else None

    return lookup


def inc(**kw: Any) -> dict[str, Any]:
    return kw


EXPANSIONS = [
    ("whole system", [], "http://vs/whole", {"a", "b", "c", "d", "e"}),
    ("is-a filter", [], "http://vs/is-a-b", {"b", "d"}),
    (
        "concept list",
        [{"url": "u1", "compose": {"include": [inc(system="http://cs", concept=[{"code": "x"}])]}}],
        "u1",
        {"x"},
    ),
    (
        "descendent-of",
        [
            {
                "url": "u1",
                "compose": {
                    "include": [
                        inc(
                            system="http://cs",
                            filter=[{"property": "concept", "op": "descendent-of", "value": "a"}],
                        )
                    ]
                },
            }
        ],
        "u1",
        {"b", "c", "d"},
    ),
    (
        "is-not-a",
        [
            {
                "url": "u1",
                "compose": {
                    "include": [
                        inc(
                            system="http://cs",
                            filter=[{"property": "concept", "op": "is-not-a", "value": "b"}],
                        )
                    ]
                },
            }
        ],
        "u1",
        {"a", "c", "e"},
    ),
    (
        "exclude",
        [
            {
                "url": "u1",
                "compose": {
                    "include": [inc(system="http://cs")],
                    "exclude": [inc(system="http://cs", concept=[{"code": "a"}, {"code": "e"}])],
                },
            }
        ],
        "u1",
        {"b", "c", "d"},
    ),
    (
        "stored includes vendored, intersected with a system part",
        [
            {
                "url": "u1",
                "compose": {
                    "include": [
                        inc(
                            system="http://cs",
                            concept=[{"code": "d"}, {"code": "e"}],
                            valueSet=["http://vs/is-a-b"],
                        )
                    ]
                },
            }
        ],
        "u1",
        {"d"},
    ),
    (
        "nested valueSet include, versioned",
        [
            {"url": "u1", "compose": {"include": [inc(valueSet=["u2|2"])]}},
            {
                "url": "u2",
                "version": "2",
                "compose": {"include": [inc(system="http://cs", concept=[{"code": "c"}])]},
            },
        ],
        "u1",
        {"c"},
    ),
    (
        "expansion.contains wins over compose, nested, abstract skipped",
        [
            {
                "url": "u1",
                "compose": {"include": [inc(system="http://cs")]},
                "expansion": {
                    "contains": [
                        {
                            "system": "http://cs",
                            "code": "top",
                            "abstract": True,
                            "contains": [{"system": "http://cs", "code": "leaf"}],
                        },
                        {"system": "http://other", "code": "z"},
                    ]
                },
            }
        ],
        "u1",
        {"leaf", "z"},
    ),
]


@pytest.mark.parametrize(
    ("stored_sets", "url", "codes"),
    [e[1:] for e in EXPANSIONS],
    ids=[e[0] for e in EXPANSIONS],
)
async def test_expand(stored_sets: list[dict[str, Any]], url: str, codes: set[str]) -> None:
    got = await Expander(stored(*stored_sets), TERM).expand(url)
    assert {c for _, c in got} == codes


FAILURES = [
    ("unknown url", [], "http://nope", BadRequest, "not-found"),
    ("vendored but needs a terminology server", [], "http://vs/snomed", NotSupported, None),
    (
        "whole external system",
        [{"url": "u1", "compose": {"include": [inc(system="http://snomed.info/sct")]}}],
        "u1",
        NotSupported,
        None,
    ),
    (
        "filter other than subsumption",
        [
            {
                "url": "u1",
                "compose": {
                    "include": [
                        inc(
                            system="http://cs",
                            filter=[{"property": "concept", "op": "regex", "value": "a.*"}],
                        )
                    ]
                },
            }
        ],
        "u1",
        NotSupported,
        None,
    ),
    (
        "filter on a hierarchy that is not subsumption",
        [
            {
                "url": "u1",
                "compose": {
                    "include": [
                        inc(
                            system="http://flat-grouping",
                            filter=[{"property": "concept", "op": "is-a", "value": "g"}],
                        )
                    ]
                },
            }
        ],
        "u1",
        NotSupported,
        None,
    ),
    (
        "cycle",
        [
            {"url": "u1", "compose": {"include": [inc(valueSet=["u2"])]}},
            {"url": "u2", "compose": {"include": [inc(valueSet=["u1"])]}},
        ],
        "u1",
        BadRequest,
        "processing",
    ),
    (
        "too deep",
        [
            {"url": f"d{i}", "compose": {"include": [inc(valueSet=[f"d{i + 1}"])]}}
            for i in range(10)
        ],
        "d0",
        NotSupported,
        None,
    ),
    (
        "too large",
        [
            {
                "url": "u1",
                "compose": {
                    "include": [
                        inc(
                            system="http://x",
                            concept=[{"code": str(i)} for i in range(MAX_CODES + 1)],
                        )
                    ]
                },
            }
        ],
        "u1",
        TooCostly,
        None,
    ),
    (
        "too many value sets",
        [{"url": "u1", "compose": {"include": [inc(valueSet=[f"w{i}" for i in range(60)])]}}]
        + [
            {
                "url": f"w{i}",
                "compose": {"include": [inc(system="http://x", concept=[{"code": "a"}])]},
            }
            for i in range(60)
        ],
        "u1",
        TooCostly,
        None,
    ),
    ("no compose", [{"url": "u1"}], "u1", NotSupported, None),
    (
        "partial expansion",
        [{"url": "u1", "expansion": {"total": 5, "contains": [{"system": "s", "code": "a"}]}}],
        "u1",
        NotSupported,
        None,
    ),
]


@pytest.mark.parametrize(
    ("stored_sets", "url", "err", "issue"), [f[1:] for f in FAILURES], ids=[f[0] for f in FAILURES]
)
async def test_expand_refused(
    stored_sets: list[dict[str, Any]], url: str, err: type[Exception], issue: str | None
) -> None:
    with pytest.raises(err) as e:
        await Expander(stored(*stored_sets), TERM).expand(url)
    if issue:
        assert e.value.code == issue  # type: ignore[attr-defined]


# --- the vendored R4 terminology -------------------------------------------------------------
# Expected values read from the specification pages, e.g.
# https://hl7.org/fhir/R4/codesystem-condition-clinical.html (active > recurrence, relapse;
# inactive > remission, resolved) and https://hl7.org/fhir/R4/valueset-administrative-gender.html.


async def test_vendored_value_sets() -> None:
    e = Expander(stored())
    gender = await e.expand("http://hl7.org/fhir/ValueSet/administrative-gender")
    assert gender == {
        ("http://hl7.org/fhir/administrative-gender", c)
        for c in ("male", "female", "other", "unknown")
    }
    ident = await e.expand("http://hl7.org/fhir/ValueSet/identifier-type")
    assert ("http://terminology.hl7.org/CodeSystem/v2-0203", "MR") in ident
    enc = await e.expand("http://terminology.hl7.org/ValueSet/v3-ActEncounterCode")
    assert {("AMB"), "EMER", "IMP", "HH", "VR"} <= {c for _, c in enc}
    with pytest.raises(NotSupported, match="terminology server"):
        await e.expand("http://hl7.org/fhir/ValueSet/observation-codes")  # all of LOINC


SUBSUMPTION = [
    (CC, "active", "below", {"active", "recurrence", "relapse"}),
    (CC, "inactive", "below", {"inactive", "remission", "resolved"}),
    (CC, "recurrence", "above", {"recurrence", "active"}),
    (CC, "resolved", "above", {"resolved", "inactive"}),
    (CC, "not-a-code", "below", {"not-a-code"}),
    (ACT, "AMB", "above", {"AMB", "_ActEncounterCode", "_ActCareProvisionCode"}),
]


@pytest.mark.parametrize(("system", "code", "direction", "expected"), SUBSUMPTION)
def test_subsumed(system: str, code: str, direction: str, expected: set[str]) -> None:
    assert {c for _, c in subsumed(system, code, direction)} == expected


def test_subsumed_unknown_system() -> None:
    with pytest.raises(NotSupported):
        subsumed("http://snomed.info/sct", "73211009", "below")


# --- parse and query ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reg() -> Registry:
    return Registry.load_default()


def test_below_filter(reg: Registry) -> None:
    c = parse_search("Condition", [("clinical-status:below", f"{CC}|inactive")], reg).criteria[0]
    keys = [
        k
        for code in ("inactive", "remission", "resolved")
        for k in (f"clinical-status={CC}|{code}", f"clinical-status=|{code}")
    ]
    assert criterion_filter(c, resource_type="Condition", elem_match=True) == {
        "ix.k": {"$in": keys}
    }


async def test_in_and_not_in_filters(reg: Registry) -> None:
    vs = {
        "url": "u1",
        "compose": {"include": [inc(system="s", concept=[{"code": "b"}, {"code": "a"}])]},
    }
    keys = ["code=s|a", "code=|a", "code=s|b", "code=|b"]
    c = parse_search("Observation", [("code:in", "u1")], reg).criteria[0]
    assert await in_value_sets(c, stored(vs)) == {"ix.k": {"$in": keys}}
    c = parse_search("Observation", [("code:not-in", "u1")], reg).criteria[0]
    assert await in_value_sets(c, stored(vs)) == {"ix.k": {"$nin": keys}}


async def test_in_user_text_is_an_operand(reg: Registry) -> None:
    vs = {"url": "u1", "compose": {"include": [inc(system="s", concept=[{"code": '{"$ne": 1}'}])]}}
    c = parse_search("Observation", [("code:in", "u1")], reg).criteria[0]
    assert await in_value_sets(c, stored(vs)) == {
        "ix.k": {"$in": ['code=s|{"$ne": 1}', 'code=|{"$ne": 1}']}
    }


BAD = [
    ("Condition", "clinical-status:below", "active", BadRequest),  # no system
    ("Condition", "clinical-status:above", f"{CC}|", BadRequest),
    ("Condition", "clinical-status:below", f"{CC}|a|b", BadRequest),
    ("Patient", "name:in", "http://vs", NotSupported),  # not a token
    ("Observation", "subject:below", "Patient/1", NotSupported),
]


@pytest.mark.parametrize(("rt", "name", "value", "err"), BAD)
def test_parse_refused(reg: Registry, rt: str, name: str, value: str, err: type[Exception]) -> None:
    with pytest.raises(err):
        parse_search(rt, [(name, value)], reg)


def test_below_unknown_system_is_not_supported(reg: Registry) -> None:
    with pytest.raises(NotSupported, match="does not hold"):
        parse_search("Condition", [("code:below", "http://snomed.info/sct|1")], reg)
    lenient = parse_search(
        "Condition",
        [("code:below", "http://snomed.info/sct|1"), ("clinical-status", "active")],
        reg,
        strict=False,
    )
    assert [d[0] for d in lenient.dropped] == ["code:below"]
    assert [c.code for c in lenient.criteria] == ["clinical-status"]


async def test_in_several_value_sets_is_the_union(reg: Registry) -> None:
    a = {"url": "ua", "compose": {"include": [inc(system="s", concept=[{"code": "a"}])]}}
    b = {"url": "ub", "compose": {"include": [inc(system="s", concept=[{"code": "b"}])]}}
    c = parse_search("Observation", [("code:in", "ua,ub")], reg).criteria[0]
    assert await in_value_sets(c, stored(a, b)) == {
        "ix.k": {"$in": ["code=s|a", "code=|a", "code=s|b", "code=|b"]}
    }
