"""Every rule of profiles/portal/scheduling.json, a passing and a refused case each,
generated from the table itself (a new clinic or visit type gets its cases for free); and
tables that contradict themselves stop start-up with a message naming the contradiction."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fhir_server.portal.scheduling import rules
from fhir_server.portal.scheduling.table import (
    TABLE,
    TableError,
    VisitType,
    load_table,
    parse_table,
)

T = load_table()
NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
CASES = [(c.organization, v) for c in T.clinics for v in c.visit_types]
IDS = [f"{org.split('/')[1]}-{v.code}" for org, v in CASES]
MINUTE = timedelta(minutes=1)


def _age_ok(v: VisitType) -> int:
    return v.ages[0] if v.ages else 30


@pytest.mark.parametrize(("org", "vt"), CASES, ids=IDS)
def test_lead_time(org: str, vt: VisitType) -> None:
    assert rules.time_refused(vt, NOW + vt.lead + MINUTE, NOW) is None
    why = rules.time_refused(vt, NOW + vt.lead - MINUTE, NOW)
    assert why is not None and "minutes ahead" in why


@pytest.mark.parametrize(("org", "vt"), CASES, ids=IDS)
def test_horizon(org: str, vt: VisitType) -> None:
    assert rules.time_refused(vt, NOW + vt.horizon - MINUTE, NOW) is None
    why = rules.time_refused(vt, NOW + vt.horizon + MINUTE, NOW)
    assert why is not None and "days ahead" in why


@pytest.mark.parametrize(("org", "vt"), CASES, ids=IDS)
def test_online_or_request_only(org: str, vt: VisitType) -> None:
    start, age = NOW + vt.lead + MINUTE, _age_ok(vt)
    refused = rules.booking_refused(vt, ("self",), age, start, NOW)
    if vt.online:
        assert refused is None
        request_only = VisitType(**{**vt.__dict__, "booking": "request"})
        assert "request only" in str(
            rules.booking_refused(request_only, ("self",), age, start, NOW)
        )
    else:
        assert refused is not None and "request only" in refused
        online = VisitType(**{**vt.__dict__, "booking": "online"})
        assert rules.booking_refused(online, ("self",), age, start, NOW) is None


@pytest.mark.parametrize(("org", "vt"), CASES, ids=IDS)
def test_ages(org: str, vt: VisitType) -> None:
    if vt.ages is None:
        assert rules.who_refused(vt, ("self",), None) is None
        return
    low, high = vt.ages
    assert rules.who_refused(vt, ("self",), low) is None
    assert rules.who_refused(vt, ("self",), high) is None
    assert rules.who_refused(vt, ("self",), high + 1) is not None
    if low > 0:
        assert rules.who_refused(vt, ("self",), low - 1) is not None


@pytest.mark.parametrize(("org", "vt"), CASES, ids=IDS)
def test_parent_of_an_adolescent(org: str, vt: VisitType) -> None:
    age = _age_ok(vt)
    as_parent = rules.who_refused(vt, ("adolescent",), age)
    if vt.adolescent_proxy:
        assert as_parent is None
    else:
        assert as_parent is not None and "adolescent" in as_parent
    # A parent of a child under 12 books what the child could (ages aside).
    assert rules.who_refused(vt, ("child",), age) is None


@pytest.mark.parametrize(("org", "vt"), CASES, ids=IDS)
def test_confidential_types_carry_labels(org: str, vt: VisitType) -> None:
    assert [lab["code"] for lab in vt.labels()] == list(vt.confidential_labels)
    if vt.confidential_labels:
        assert not vt.adolescent_proxy


def test_roles_cover_every_writer_kind() -> None:
    assert rules.role(T, ("basic",)) == "never"
    assert rules.role(T, ("clinician",)) == "staff"
    assert rules.role(T, ("system",)) == "staff"
    assert rules.role(T, ("self",)) == "patient"
    assert rules.role(T, ("adolescent",)) == "patient"


def _raw() -> dict[str, Any]:
    return dict(json.loads(TABLE.read_text()))


def _broken(change: Any) -> dict[str, Any]:
    raw = copy.deepcopy(_raw())
    change(raw)
    return raw


def _vt(raw: dict[str, Any]) -> dict[str, Any]:
    return dict(raw["clinics"][0]["visit_types"][0])


CONTRADICTIONS = {
    "lead past the horizon": (
        lambda r: r["clinics"][0]["visit_types"][0].update(
            lead_minutes=60 * 24 * 100, horizon_days=90
        ),
        "leaves nothing before the horizon",
    ),
    "confidential yet parents book it": (
        lambda r: r["clinics"][0]["visit_types"][0].update(
            confidential_labels=["R"], adolescent_proxy=True
        ),
        "confidential visit type cannot allow a parent",
    ),
    "a location in two clinics": (
        lambda r: r["clinics"][1]["locations"].append(r["clinics"][0]["locations"][0]),
        "belongs to both",
    ),
    "a visit type twice": (
        lambda r: r["clinics"][0]["visit_types"].append(_vt(r)),
        "listed twice",
    ),
    "empty age range": (
        lambda r: r["clinics"][0]["visit_types"][0].update(ages=[17, 12]),
        "empty range",
    ),
    "unknown booking": (
        lambda r: r["clinics"][0]["visit_types"][0].update(booking="phone"),
        "booking must be one of",
    ),
    "a writer kind both patient and staff": (
        lambda r: r["actors"]["staff"].append("self"),
        "in two of",
    ),
    "a writer kind nowhere": (
        lambda r: r["actors"]["never"].remove("basic"),
        "in none of the lists",
    ),
    "clipboard not a Questionnaire": (
        lambda r: r["clinics"][0]["visit_types"][0].update(clipboard="Observation/x"),
        "Questionnaire",
    ),
    "a closed status counted open": (
        lambda r: r["clipboard_task"]["open_statuses"].append("completed"),
        "completed or cancelled",
    ),
    "one code for both Tasks": (
        lambda r: r.update(request_task=copy.deepcopy(r["clipboard_task"])),
        "different codes",
    ),
    "hold time of zero": (
        lambda r: r["clinics"][0]["visit_types"][0].update(hold_minutes=0),
        "hold_minutes",
    ),
}


@pytest.mark.parametrize("name", sorted(CONTRADICTIONS))
def test_a_contradictory_table_stops_start_up(name: str) -> None:
    change, message = CONTRADICTIONS[name]
    with pytest.raises(TableError, match=message):
        parse_table(_broken(change))


def test_the_shipped_table_parses() -> None:
    assert parse_table(_raw()) == T
