"""`_text` and `_content`: word extraction at write time and the query (no I/O)."""

from __future__ import annotations

import pytest

from fhir_server.errors import BadRequest, NotSupported
from fhir_server.search.extract import MAX_WORDS, content_words, index_entries, narrative_words
from fhir_server.search.parse import parse_search
from fhir_server.search.query import criterion_filter
from fhir_server.search.registry import Registry
from fhir_server.search.values import words


@pytest.fixture(scope="module")
def reg() -> Registry:
    return Registry.load_default()


WORDS = [
    ("Hello, World!", ["hello", "world"]),
    ("Crème BRÛLÉE crème", ["creme", "brulee"]),  # folded, deduplicated, first-seen order
    ("Driver's License", ["driver", "license"]),  # one-letter words dropped
    ("snake_case-word 8302-2", ["snake", "case", "word", "8302"]),
    ("Ärzte  straße", ["arzte", "strasse"]),
    ("x" * 60, ["x" * 40]),
    ("--- ! ?", []),
]


@pytest.mark.parametrize(("text", "expected"), WORDS)
def test_words(text: str, expected: list[str]) -> None:
    assert words(text) == expected


def test_narrative_words() -> None:
    r = {
        "resourceType": "Condition",
        "text": {
            "status": "generated",
            "div": '<div xmlns="http://www.w3.org/1999/xhtml"><p>Closed <b>fracture</b>'
            " of hip &amp; caf&eacute;</p></div>",
        },
    }
    # Tag names and attributes (div, xmlns, http, www) are not narrative words.
    assert narrative_words(r) == ["closed", "fracture", "of", "hip", "cafe"]
    assert narrative_words({"resourceType": "Patient"}) == []


def test_content_words_skip_ids_references_systems_and_narrative() -> None:
    r = {
        "resourceType": "Observation",
        "id": "abcdef",
        "meta": {"versionId": "7", "source": "sourceword"},
        "text": {"status": "generated", "div": "<div>narrativeword</div>"},
        "status": "final",
        "code": {
            "coding": [{"system": "http://loinc.org", "code": "8302-2", "display": "Body Height"}]
        },
        "subject": {"reference": "Patient/refword", "display": "Amy Shaw"},
        "valueQuantity": {"value": 180, "unit": "cm"},
        "extension": [{"url": "http://urlword", "valueString": "extension Value"}],
    }
    got = content_words(r)
    assert set(got) == {
        "generated",
        "final",
        "8302",
        "body",
        "height",
        "amy",
        "shaw",
        "cm",
        "extension",
        "value",
    }
    keys = index_entries(r, Registry.load_default())["k"]
    assert "_content=height" in keys and "_text=narrativeword" in keys
    assert "_content=narrativeword" not in keys and "_content=loinc" not in keys


def test_words_are_bounded() -> None:
    r = {"resourceType": "Basic", "text": {"div": " ".join(f"w{i}" for i in range(2000))}}
    r["note"] = [{"text": f"n{i}"} for i in range(2000)]
    assert narrative_words(r) == [f"w{i}" for i in range(MAX_WORDS)]
    assert len(content_words(r)) == MAX_WORDS


FILTERS = [
    ("Condition", "_text", "fracture", {"ix.k": "_text=fracture"}),
    ("Condition", "_text", "Fracture HIP", {"ix.k": {"$all": ["_text=fracture", "_text=hip"]}}),
    ("Patient", "_content", "Müller", {"ix.k": "_content=muller"}),
    (
        "Patient",
        "_content",
        "amy,bob shaw",
        {"$or": [{"ix.k": "_content=amy"}, {"ix.k": {"$all": ["_content=bob", "_content=shaw"]}}]},
    ),
    # Regex and operator characters are word separators, never operators.
    ("Patient", "_content", "a.*b $ne", {"ix.k": "_content=ne"}),
    (None, "_content", "smith", {"ix.k": "_content=smith"}),
]


@pytest.mark.parametrize(("rt", "name", "value", "expected"), FILTERS)
def test_filter(reg: Registry, rt: str | None, name: str, value: str, expected: dict) -> None:
    c = parse_search(rt, [(name, value)], reg).criteria[0]
    assert criterion_filter(c, resource_type=rt, elem_match=True) == expected


BAD = [
    ("_text", "", BadRequest),
    ("_text", "!!", BadRequest),
    ("_content", "a", BadRequest),  # only a one-letter word
    ("_content", "x,", BadRequest),
    ("_content", " ".join(f"w{i}" for i in range(21)), BadRequest),
    ("_text:exact", "fracture", NotSupported),
    ("_sort", "_content", NotSupported),
]


@pytest.mark.parametrize(("name", "value", "err"), BAD)
def test_refused(reg: Registry, name: str, value: str, err: type[Exception]) -> None:
    with pytest.raises(err):
        parse_search("Condition", [(name, value)], reg)


def test_capability_statement_documents_the_semantics(reg: Registry) -> None:
    from types import SimpleNamespace

    from fhir_server.capability import _search_params

    params = {p["name"]: p for p in _search_params(SimpleNamespace(registry=reg), "Condition")}  # type: ignore[arg-type]
    assert "whole words of the narrative" in params["_text"]["documentation"].lower()
    assert "accent-insensitive" in params["_content"]["documentation"]
    assert params["code"]["documentation"]  # others keep HL7's text


def test_audit_events_carry_no_word_keys(reg: Registry) -> None:
    event = {
        "resourceType": "AuditEvent",
        "text": {"status": "generated", "div": "<div>Dr Kim read an Observation</div>"},
        "type": {"code": "rest"},
        "recorded": "2026-01-01T00:00:00Z",
        "agent": [{"requestor": True, "who": {"display": "Rachel Kim"}}],
        "source": {"observer": {"display": "fhir-server"}},
    }
    keys = index_entries(event, reg)["k"]
    assert not [k for k in keys if k.startswith(("_text=", "_content="))]
    assert "type=rest" in keys or any(k.startswith("type=") for k in keys)
    with pytest.raises(NotSupported):
        parse_search("AuditEvent", [("_content", "kim")], reg, strict=True)
