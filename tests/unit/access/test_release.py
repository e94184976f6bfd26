"""The results-release table (profiles/access/release.json) and its pure rules: what the
parser refuses at start-up, the release instant of a result, and the query clause and the
post-check deciding alike."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fhir_server.access.release import (
    FOREVER,
    LAWFUL_RELEASED,
    ReleaseTable,
    admits,
    parse_table,
    query_clause,
)
from fhir_server.access.stored_keys import access_field
from fhir_server.search.secantus_plan import recheck

RAW = json.loads((Path(__file__).resolve().parents[3] / "profiles/access/release.json").read_text())
TABLE = parse_table(RAW)
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def changed(**edits: Any) -> dict[str, Any]:
    raw = copy.deepcopy(RAW)
    for path, value in edits.items():
        node = raw
        *head, last = path.split("__")
        for p in head:
            node = node[p]
        node[last] = value
    return raw


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (changed(default_holds={"pathology": 7}), "information blocking"),
        *[
            (changed(released_statuses=[s for s in LAWFUL_RELEASED if s != gone]), gone)
            for gone in LAWFUL_RELEASED
        ],
        (changed(surprise=True), "unknown keys"),
        (changed(types=["Observation", "NoSuchType"]), "unknown resource types"),
        (changed(hold__max_days=0), "hold.max_days"),
        (changed(hold__max_days=400), "hold.max_days"),
        (changed(hold__reasons=[]), "lawful reasons"),
        (changed(hold__reasons=[{"code": "x"}]), "display"),
        (changed(hold__patient_request_reason="nope"), "patient_request_reason"),
        (changed(patient_delays__max_days=120), "patient_delays.max_days"),
        (changed(patient_delays__categories={"pathology": []}), "codings"),
        (changed(show_preliminary="yes"), "true or false"),
        (changed(status_elements={"Observation": "status"}), "status_elements"),
        (changed(attachments={"type": "Observation", "urls": {}}), "attachments.type"),
    ],
)
def test_the_table_refuses(raw: dict[str, Any], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_table(raw, frozenset({"Observation", "DiagnosticReport", "DocumentReference"}))


def test_the_shipped_table() -> None:
    assert set(LAWFUL_RELEASED) <= TABLE.released
    assert ("preliminary" in TABLE.released) is RAW["show_preliminary"]
    assert RAW["default_holds"] == {}
    shown = parse_table(changed(show_preliminary=True))
    assert "preliminary" in shown.released


def hold(table: ReleaseTable, expires: datetime) -> dict[str, Any]:
    return table.hold_extension("preventing-harm", expires)


def result(status: str = "final", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": status, **extra}


def test_the_release_instant() -> None:
    until = NOW + timedelta(days=3)
    assert TABLE.hidden_until("Observation", result()) is None
    assert TABLE.hidden_until("Observation", result("preliminary")) == FOREVER
    assert TABLE.hidden_until("Observation", result(extension=[hold(TABLE, until)])) == until
    # A status that does not release wins over any hold.
    held_prelim = result("registered", extension=[hold(TABLE, until)])
    assert TABLE.hidden_until("Observation", held_prelim) == FOREVER
    # Not a result type: never hidden by release.
    assert TABLE.hidden_until("Condition", {"resourceType": "Condition"}) is None
    doc = {"resourceType": "DocumentReference", "status": "current"}
    assert TABLE.hidden_until("DocumentReference", doc) is None  # no docStatus
    assert TABLE.hidden_until("DocumentReference", {**doc, "docStatus": "preliminary"}) == FOREVER


def test_a_malformed_hold_is_no_hold() -> None:
    broken = {"url": TABLE.extension, "extension": [{"url": "reason"}]}
    assert TABLE.hold_of(result(extension=[broken])) is None
    dateonly = hold(TABLE, NOW)
    dateonly["extension"][1]["valueDateTime"] = "2027-01-01"
    assert TABLE.hold_of(result(extension=[dateonly])) is None


@pytest.mark.parametrize(
    "resource",
    [
        result(),
        result("preliminary"),
        result(extension=[hold(TABLE, NOW - timedelta(seconds=1))]),
        result(extension=[hold(TABLE, NOW)]),
        result(extension=[hold(TABLE, NOW + timedelta(seconds=1))]),
    ],
)
def test_the_query_clause_and_the_post_check_agree(resource: dict[str, Any]) -> None:
    stored = {"ak": access_field([], "Observation", resource)}
    test, fields = recheck(query_clause(NOW)) or (None, ())
    assert test is not None and fields == ("ak.r",)
    by_query = test(stored)
    assert admits(TABLE, "Observation", resource, stored, NOW) is by_query
    assert admits(TABLE, "Observation", resource, None, NOW) is by_query  # from the resource
    until = TABLE.hidden_until("Observation", resource)
    assert by_query is (until is None or until <= NOW)


def test_categories_and_attachments() -> None:
    report = {
        "resourceType": "DiagnosticReport",
        "category": [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "SP"}]}
        ],
        "presentedForm": [{"url": "Binary/b1"}, {"url": "https://elsewhere/Binary/b2"}],
    }
    assert TABLE.categories_of("DiagnosticReport", report) == {"pathology"}
    assert TABLE.attachments_of("DiagnosticReport", report) == ["b1"]
    note = {"content": [{"attachment": {"url": "Binary/n1"}}, {"attachment": {}}]}
    assert TABLE.attachments_of("DocumentReference", note) == ["n1"]
