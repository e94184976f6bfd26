from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from fhir_server.errors import BadRequest
from fhir_server.rest.headers import http_date, parse_if_match, prefer


@pytest.mark.parametrize(
    ("value", "vid"), [('W/"3"', 3), ('"12"', 12), ("7", 7), (None, None), (' W/"1" ', 1)]
)
def test_if_match(value, vid):
    assert parse_if_match(value) == vid


@pytest.mark.parametrize("value", ['W/"a"', "abc", 'W/""', "*"])
def test_bad_if_match(value):
    with pytest.raises(BadRequest):
        parse_if_match(value)


def test_prefer():
    assert prefer("return=minimal") == {"return": "minimal"}
    assert prefer('return="OperationOutcome", handling=lenient') == {
        "return": "operationoutcome",
        "handling": "lenient",
    }
    assert prefer(None) == {}
    assert prefer("respond-async") == {}


def test_http_date_is_gmt_whatever_the_offset():
    t = datetime(2026, 11, 22, 3, 18, 33, tzinfo=UTC)
    assert http_date(t) == "Sun, 22 Nov 2026 03:18:33 GMT"
    other = t.astimezone(timezone(timedelta(hours=5)))
    assert http_date(other) == "Sun, 22 Nov 2026 03:18:33 GMT"
