from __future__ import annotations

import pytest

from fhir_server.errors import BadRequest
from fhir_server.rest.bundle import _entry_request, _references, _rewrite_references, status_line


def test_rewrite_replaces_only_mapped_reference_values():
    doc = {
        "subject": {"reference": "urn:uuid:1"},
        "note": [{"text": "urn:uuid:1"}],
        "performer": [{"reference": "Practitioner/x"}, {"reference": "urn:uuid:2"}],
    }
    out = _rewrite_references(doc, {"urn:uuid:1": "Patient/a", "urn:uuid:2": "Practitioner/b"})
    assert out == {
        "subject": {"reference": "Patient/a"},
        "note": [{"text": "urn:uuid:1"}],
        "performer": [{"reference": "Practitioner/x"}, {"reference": "Practitioner/b"}],
    }
    assert doc["subject"]["reference"] == "urn:uuid:1"  # the input is left alone


def test_references_found_at_any_depth():
    doc = {"a": [{"b": {"reference": "Patient?identifier=x|1"}}], "reference": "Group/g"}
    assert _references(doc, set()) == {"Patient?identifier=x|1", "Group/g"}


def test_entry_request_parses_url_and_conditional_headers():
    req = _entry_request(
        {
            "request": {
                "method": "put",
                "url": "Patient?identifier=x%7C1",
                "ifMatch": 'W/"2"',
                "ifNoneExist": "a=b",
            }
        },
        0,
    )
    assert req.method == "PUT"
    assert req.path == ["Patient"]
    assert req.params == [("identifier", "x|1")]
    assert req.headers == {"if-match": 'W/"2"', "if-none-exist": "a=b"}
    assert req.in_bundle


@pytest.mark.parametrize(
    "entry",
    [{}, {"request": {"method": "GET"}}, {"request": {"method": "FETCH", "url": "Patient"}}],
)
def test_entry_request_refuses_incomplete_requests(entry):
    with pytest.raises(BadRequest):
        _entry_request(entry, 3)


def test_status_line():
    assert status_line(201) == "201 Created"
    assert status_line(299) == "299"
