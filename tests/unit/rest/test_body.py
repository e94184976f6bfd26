from __future__ import annotations

import pytest

from fhir_server.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from fhir_server.rest.body import JSON_TYPES, check_media_type, check_tree, parse_json


@pytest.mark.parametrize(
    "ctype",
    [
        None,
        "application/fhir+json",
        "application/json; charset=utf-8",
        "Application/FHIR+JSON;fhirVersion=4.0",
    ],
)
def test_json_media_types_accepted(ctype):
    check_media_type(ctype, JSON_TYPES)


@pytest.mark.parametrize("ctype", ["application/fhir+xml", "text/plain", "multipart/form-data"])
def test_other_media_types_refused(ctype):
    with pytest.raises(UnsupportedMediaType) as err:
        check_media_type(ctype, JSON_TYPES)
    assert err.value.status == 415


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"", "empty"),
        (b"   ", "empty"),
        (b"{", "not valid JSON"),
        (b"{'a': 1}", "not valid JSON"),
    ],
)
def test_parse_json_errors(raw, fragment):
    with pytest.raises(BadRequest) as err:
        parse_json(raw, max_bytes=100, max_depth=10)
    assert fragment in err.value.diagnostics
    assert err.value.issues[0].code == "structure"


def test_size_limit():
    with pytest.raises(PayloadTooLarge) as err:
        parse_json(b'{"a": "' + b"x" * 200 + b'"}', max_bytes=100, max_depth=10)
    assert err.value.status == 413


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        ({"$where": 1}, "$where"),
        ({"a": [{"b": {"$gt": 1}}]}, "a[0].b.$gt"),
        ({"a.b": 1}, "a.b"),
        ({"ok": {"x\u0000y": 1}}, "ok.x\u0000y"),
    ],
)
def test_forbidden_keys_point_at_the_key(doc, where):
    with pytest.raises(BadRequest) as err:
        check_tree(doc, max_depth=10)
    assert err.value.issues[0].expression == (where,)


def test_depth_limit_counts_objects_and_arrays():
    doc: dict = {"leaf": 1}
    for _ in range(4):
        doc = {"a": [doc]}
    check_tree(doc, max_depth=9)
    with pytest.raises(BadRequest):
        check_tree(doc, max_depth=8)


def test_values_may_contain_dollars_and_dots():
    check_tree({"text": "$5.00 at www.example.org", "list": ["$x", "a.b"]}, max_depth=5)
