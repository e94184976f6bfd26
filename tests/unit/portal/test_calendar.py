"""The business-day calendar (fhir_server/portal/calendar.py) against the dates the U.S.
Office of Personnel Management publishes for federal holidays, and the table's own checks."""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from fhir_server.portal.calendar import parse_calendar
from fhir_server.portal.response_times import TABLE, load_table, parse_table

# OPM's published observed dates (opm.gov, "Federal Holidays"), typed in from its pages:
# independent of the rules the table states.
OPM = {
    2025: ["01-01", "01-20", "02-17", "05-26", "06-19", "07-04", "09-01", "10-13", "11-11",
           "11-27", "12-25"],
    2026: ["01-01", "01-19", "02-16", "05-25", "06-19", "07-03", "09-07", "10-12", "11-11",
           "11-26", "12-25"],
    2027: ["01-01", "01-18", "02-15", "05-31", "06-18", "07-05", "09-06", "10-11", "11-11",
           "11-25", "12-24", "12-31"],
    2028: ["01-17", "02-21", "05-29", "06-19", "07-04", "09-04", "10-09", "11-10", "11-23",
           "12-25"],
}  # fmt: skip
RAW = json.loads(TABLE.read_text())
CAL = load_table().calendar


@pytest.mark.parametrize("year", sorted(OPM))
def test_holidays_are_the_published_observed_dates(year: int) -> None:
    assert sorted(CAL.holidays_in(year)) == [date.fromisoformat(f"{year}-{d}") for d in OPM[year]]


def reference_due(sent: datetime, n: int) -> date:
    """A second, plain count over the published dates: weekdays that are not holidays."""
    closed = {date.fromisoformat(f"{y}-{d}") for y, ds in OPM.items() for d in ds}
    d, left = sent.astimezone(CAL.zone).date(), n
    while left:
        d += timedelta(days=1)
        if d.weekday() < 5 and d not in closed:
            left -= 1
    return d


def test_due_dates_across_weekends_and_holidays() -> None:
    rules = load_table()
    cases = {
        # Wednesday before Thanksgiving 2026: Thu holiday, Fri, weekend, Mon, Tue.
        datetime(2026, 11, 25, 20, 0, tzinfo=UTC): date(2026, 12, 1),
        # Friday: the weekend is skipped.
        datetime(2026, 12, 4, 15, 0, tzinfo=UTC): date(2026, 12, 9),
        # Saturday and Sunday count from Monday.
        datetime(2026, 12, 5, 15, 0, tzinfo=UTC): date(2026, 12, 9),
        # 23:30 Eastern on Monday is 04:30 UTC on Tuesday: the clinic's day decides.
        datetime(2026, 12, 8, 4, 30, tzinfo=UTC): date(2026, 12, 10),
        # Christmas Eve 2027 and New Year's Eve 2027 are both observed holidays.
        datetime(2027, 12, 23, 15, 0, tzinfo=UTC): date(2027, 12, 29),
        datetime(2027, 12, 30, 15, 0, tzinfo=UTC): date(2028, 1, 5),
        # Juneteenth 2027 observed on Friday 18 June.
        datetime(2027, 6, 16, 15, 0, tzinfo=UTC): date(2027, 6, 22),
    }
    for sent, want in cases.items():
        got = rules.due(sent)
        assert got.date() == want == reference_due(sent, rules.business_days), sent
        assert (got.hour, got.minute) == (17, 0)  # close of business, clinic time
        # Eastern time with daylight saving: 22:00 UTC in winter, 21:00 UTC in summer.
        summer = 3 < want.month < 11
        assert got.astimezone(UTC).hour == (21 if summer else 22)


def test_every_day_of_four_years_agrees_with_the_reference() -> None:
    rules = load_table()
    day = datetime(2025, 1, 1, 15, 0, tzinfo=UTC)
    while day.year < 2028 or day.month < 12:
        assert rules.due(day).date() == reference_due(day, rules.business_days), day
        day += timedelta(days=1)


def broken(edit: Any) -> dict[str, Any]:
    raw = copy.deepcopy(RAW)
    edit(raw)
    return raw


BROKEN = {
    "holiday with a day and a weekday": lambda r: r["calendar"]["holidays"][0].update(
        weekday="monday", nth=1
    ),
    "30 February": lambda r: r["calendar"]["holidays"][0].update(month=2, day=30),
    "29 February": lambda r: r["calendar"]["holidays"][0].update(month=2, day=29),
    "fifth Monday": lambda r: r["calendar"]["holidays"][1].update(nth=5),
    "holiday named twice": lambda r: r["calendar"]["holidays"][1].update(name="New Year's Day"),
    "same rule twice": lambda r: r["calendar"]["holidays"].append(
        {"name": "Again", "month": 7, "day": 4}
    ),
    "holiday on a weekend weekday": lambda r: r["calendar"]["holidays"].append(
        {"name": "A Saturday", "month": 3, "weekday": "saturday", "nth": 1}
    ),
    "observed shift onto the weekend": lambda r: r["calendar"]["observed"].update(saturday=1),
    "observed shift of a weekday": lambda r: r["calendar"]["observed"].update(monday=1),
    "every day a weekend": lambda r: r["calendar"].update(
        weekend=list(("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"))
    ),
    "unknown weekday": lambda r: r["calendar"].update(weekend=["samedi"]),
    "unknown time zone": lambda r: r["calendar"].update(time_zone="Mars/Olympus"),
    "bad close of business": lambda r: r["calendar"].update(close_of_business="25:00"),
    "closure not a date": lambda r: r["calendar"].update(closures=["2026-13-01"]),
    "closure twice": lambda r: r["calendar"].update(closures=["2026-12-24", "2026-12-24"]),
    "unknown calendar key": lambda r: r["calendar"].update(holiday=[]),
    "zero business days": lambda r: r["task"].update(business_days=0),
    "business days a boolean": lambda r: r["task"].update(business_days=True),
    "sender also responder": lambda r: r["task"].update(responders=["Patient"]),
    "unknown owner type": lambda r: r["task"].update(owners=["Team"]),
    "completed is open": lambda r: r["task"]["open_statuses"].append("completed"),
    "requested is not open": lambda r: r["task"]["open_statuses"].remove("requested"),
    "code without a system": lambda r: r["task"]["code"].pop("system"),
    "search parameter on another type": lambda r: r["search_parameter"].update(base=["Patient"]),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_contradicting_table_stops_start_up(name: str) -> None:
    from fhir_server.validation import KNOWN_RESOURCE_TYPES

    with pytest.raises(ValueError, match="response_times.json"):
        parse_table(broken(BROKEN[name]), KNOWN_RESOURCE_TYPES)


def test_closures_and_the_shipped_table() -> None:
    raw = copy.deepcopy(RAW["calendar"])
    raw["closures"] = ["2026-12-24"]
    cal = parse_calendar(raw)
    assert not cal.is_business_day(date(2026, 12, 24))
    assert CAL.is_business_day(date(2026, 12, 24))
    # The shipped table parses, and its SearchParameter names the due date.
    rules = load_table()
    assert rules.business_days == 3
    assert rules.search_parameter["expression"] == "Task.restriction.period.end"
