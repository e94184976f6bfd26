"""Every eligibility rule of profiles/portal/medications.json, a passing and a refused case
each, generated from the table at fixed dates (the clock of rules computed on read)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from fhir_server import clock
from fhir_server.portal.prescriptions import eligibility
from fhir_server.portal.prescriptions.table import TABLE, load_table, parse_table

RULES = load_table()
TODAY = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)
DAY = TODAY.date()
WINDOW = RULES.renewal_window_days


def mr(allowed: int = 3, end: date | None = None, **extra: Any) -> dict[str, Any]:
    end = end or DAY + timedelta(days=30)
    return {
        "resourceType": "MedicationRequest",
        "status": sorted(RULES.statuses)[0],
        "intent": sorted(RULES.intents)[0],
        "medicationCodeableConcept": {"text": "x"},
        "dispenseRequest": {
            "numberOfRepeatsAllowed": allowed,
            "validityPeriod": {"start": "2025-01-01", "end": end.isoformat()},
        },
        **extra,
    }


def judge(res: dict[str, Any], used: int = 0) -> tuple[str, str]:
    with clock.fixed(TODAY):
        e = eligibility.evaluate(RULES, res, used, clock.now().date())
    return e.value, e.reason


def excluded_cases() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for c in RULES.excluded:
        if c.extension_url:
            for code in sorted(c.extension_codes):
                out.append(
                    (
                        f"{c.name} {code}",
                        {"extension": [{"url": c.extension_url, "valueCode": code}]},
                    )
                )
        for system, code in sorted(c.codings):
            out.append(
                (
                    f"{c.name} {code}",
                    {"medicationCodeableConcept": {"coding": [{"system": system, "code": code}]}},
                )
            )
    return out


def test_refills_remain_until_used_and_until_the_end_day() -> None:
    assert judge(mr(allowed=2), used=1) == ("refillable", "refills-remain")
    assert judge(mr(allowed=2), used=2) == ("renewable", "no-refills-left")
    assert judge(mr(end=DAY)) == ("refillable", "refills-remain")  # the last valid day
    assert judge(mr(end=DAY - timedelta(days=1))) == ("renewable", "expired")


def test_renewal_window_boundary() -> None:
    assert judge(mr(end=DAY - timedelta(days=WINDOW))) == ("renewable", "expired")
    assert judge(mr(end=DAY - timedelta(days=WINDOW + 1))) == ("none", "renewal-window-passed")


@pytest.mark.parametrize("status", sorted(RULES.statuses) + ["stopped", "draft"])
@pytest.mark.parametrize("intent", sorted(RULES.intents) + ["proposal", "plan"])
def test_which_statuses_and_intents_count(status: str, intent: str) -> None:
    got = judge(mr(status=status, intent=intent))
    if status in RULES.statuses and intent in RULES.intents:
        assert got == ("refillable", "refills-remain")
    else:
        assert got == ("none", "not-an-active-order")


@pytest.mark.parametrize(("name", "marks"), excluded_cases())
def test_excluded_classes_are_never_renewable(name: str, marks: dict[str, Any]) -> None:
    expired = mr(end=DAY - timedelta(days=5))
    assert judge(expired) == ("renewable", "expired")  # the passing case
    assert judge({**expired, **marks}) == ("none", "excluded-class"), name
    assert judge({**mr(allowed=0), **marks}) == ("none", "excluded-class"), name


def test_the_extension_is_replaced_not_repeated() -> None:
    res = mr()
    with clock.fixed(TODAY):
        eligibility.annotate(RULES, res, {"wf": {"refills": 3}}, clock.now().date())
        eligibility.annotate(RULES, res, {"wf": {"refills": 3}}, clock.now().date())
    ours = [e for e in res["extension"] if e["url"] == RULES.extension_url]
    assert len(ours) == 1
    assert ours[0]["extension"][0]["valueCode"] == "renewable"


@pytest.mark.parametrize(
    ("path", "value", "says"),
    [
        (("eligibility", "renewal_window_days"), -1, "renewal_window_days"),
        (("eligibility", "reasons"), {"expired": "x"}, "reasons"),
        (("refill", "requesters"), ["self", "adolescent"], "adolescent"),
        (("refill", "owners"), ["Patient"], "owners"),
        (("eligibility", "extension_url"), "http://elsewhere/x", "StructureDefinitions"),
    ],
)
def test_a_bad_table_stops_start_up(path: tuple[str, str], value: Any, says: str) -> None:
    raw = json.loads(TABLE.read_text())
    raw[path[0]][path[1]] = value
    with pytest.raises(ValueError, match=says):
        parse_table(raw)
