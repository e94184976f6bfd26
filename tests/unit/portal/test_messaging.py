"""The messaging table parses fail-fast; name matching and the write table's recipient
changes are pure functions (fhir_server/portal/messaging/, access/writes.py)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from fhir_server.access import writes
from fhir_server.portal.messaging.operations import name_matches, patient_reference
from fhir_server.portal.messaging.table import TABLE, parse_table

RAW = json.loads(TABLE.read_text())


def test_the_table_parses() -> None:
    t = parse_table(RAW, frozenset({"CareTeam", "Communication"}))
    assert t.open_status == "in-progress" and t.read_element == "received"
    header = {"category": [{"coding": [{"system": t.category_system, "code": "medication"}]}]}
    assert t.category_of(header) == "medication"
    assert t.category_of({"category": [{"coding": [{"code": "medication"}]}]}) is None


@pytest.mark.parametrize(
    "spoil",
    [
        lambda r: r["categories"].update(system="not a uri"),
        lambda r: r["categories"].update(codes={}),
        lambda r: r["header"].update(closed_statuses=["in-progress"]),
        lambda r: r["recipients"].update(member_types=["NoSuchType"]),
        lambda r: r["clinician_recipients"].update(subject="yes"),
        lambda r: r["read_state"].update(element="payload"),
        lambda r: r["message"].update(statuses=[]),
        lambda r: r.pop("fixed"),
    ],
)
def test_a_malformed_table_stops_start_up(spoil: Callable[[dict[str, Any]], Any]) -> None:
    raw = copy.deepcopy(RAW)
    spoil(raw)
    with pytest.raises((ValueError, KeyError)):
        parse_table(raw, frozenset({"CareTeam", "Communication"}))


def test_names_match_by_word_prefix_without_case_or_accents() -> None:
    names = ["Family Medicine nurse pool", "Lakeside MMC Family Medicine Clinic"]
    for query in ("lakeside mmc family medicine", "FAMÍLY médicine", "nurse", "fam med clin"):
        assert name_matches(query, names), query
    for query in ("internal medicine", "fort belvoir family medicine", "amily"):
        assert not name_matches(query, names), query


def test_patient_parameter() -> None:
    assert patient_reference("x-1") == patient_reference("Patient/x-1") == "Patient/x-1"
    for bad in (None, "", "Patient/a b"):
        with pytest.raises(Exception) as exc:
            patient_reference(bad)
        assert getattr(exc.value, "status", 0) == 400


def test_only_a_read_state_change_passes_unbound() -> None:
    t = writes.load_table()
    old = {
        "resourceType": "Communication",
        "id": "m",
        "meta": {"versionId": "1"},
        "status": "completed",
    }
    read = {**old, "meta": {"versionId": "2"}, "received": "2026-01-01T00:00:00Z"}
    assert t.recipient_change("Communication", old, read)
    assert t.recipient_change("Communication", old, {**read, "status": "stopped"})
    assert not t.recipient_change("Communication", old, {**read, "priority": "urgent"})
    assert not t.recipient_change("Communication", old, old)
    assert not t.recipient_change("Observation", old, read)
    assert writes.changed_elements(old, read) == {"received"}
