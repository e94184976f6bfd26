"""A clinic's business-day calendar: weekends, U.S. federal holidays as rules, closures.

Pure functions of a parsed table (`profiles/portal/response_times.json`, "calendar"), so the
response-time workflow, the seed and the tests compute a due date the same way.

Holidays are rules, not a list of dates, so every year the server can see is covered: the
legal public holidays of 5 U.S.C. 6103(a), each a fixed date ("July 4") or the n-th (or last)
weekday of a month ("the fourth Thursday in November"). A fixed-date holiday that falls on a
weekend is observed on another day (5 U.S.C. 6103(b) and Executive Order 11582: Saturday ->
the Friday before, Sunday -> the Monday after); the table says which shift, so New Year's Day
2028, a Saturday, is observed on Friday 31 December 2027.
"""

from __future__ import annotations

import calendar as _cal
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import cached_property
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
# How far a business-day count may walk before the table is deemed to close every day.
_MAX_WALK = 366


@dataclass(frozen=True)
class Holiday:
    """One holiday rule: a fixed `day` of `month`, or the `nth` `weekday` of `month`
    (`nth` 1-4, or -1 for the last)."""

    name: str
    month: int
    day: int | None = None
    weekday: int | None = None
    nth: int | None = None

    def actual(self, year: int) -> date:
        """The holiday's own date in `year` (before any observed-date shift)."""
        if self.day is not None:
            return date(year, self.month, self.day)
        assert self.weekday is not None and self.nth is not None
        days = _cal.monthrange(year, self.month)[1]
        if self.nth > 0:
            first = date(year, self.month, 1)
            return first + timedelta(days=(self.weekday - first.weekday()) % 7 + 7 * (self.nth - 1))
        last = date(year, self.month, days)
        return last - timedelta(days=(last.weekday() - self.weekday) % 7)


@dataclass(frozen=True)
class Calendar:
    """Which days a clinic answers messages on."""

    weekend: frozenset[int]  # date.weekday() numbers
    holidays: tuple[Holiday, ...]
    # Observed-date shift of a fixed-date holiday falling on a weekend day, in days.
    observed: Mapping[int, int]
    # Extra days closed (training days, an announced closure).
    closures: frozenset[date]
    time_zone: str
    # Due dates fall at this local time of the last business day.
    close_of_business: time

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    def observed_date(self, h: Holiday, year: int) -> date:
        d = h.actual(year)
        if h.day is None:
            return d  # an n-th weekday rule never falls on a weekend in this table
        return d + timedelta(days=self.observed.get(d.weekday(), 0))

    def holidays_in(self, year: int) -> dict[date, str]:
        """Observed holiday dates that fall in `year` (a rule of the next year may be
        observed on 31 December of this one)."""
        out: dict[date, str] = {}
        for y in (year - 1, year, year + 1):
            for h in self.holidays:
                d = self.observed_date(h, y)
                if d.year == year:
                    out[d] = h.name
        return out

    def is_business_day(self, d: date) -> bool:
        return (
            d.weekday() not in self.weekend
            and d not in self.closures
            and d not in self.holidays_in(d.year)
        )

    def add_business_days(self, start: date, n: int) -> date:
        """The n-th business day after `start` (`start` itself never counts)."""
        d, left = start, n
        for _ in range(_MAX_WALK * max(n, 1)):
            d += timedelta(days=1)
            if self.is_business_day(d):
                left -= 1
                if left == 0:
                    return d
        raise ValueError(f"no {n} business days within a year after {start}")

    def due(self, sent: datetime, business_days: int) -> datetime:
        """Close of business, clinic time, of the `business_days`-th business day after the
        clinic-local date of `sent` (an aware datetime)."""
        local = sent.astimezone(self.zone).date()
        day = self.add_business_days(local, business_days)
        return datetime.combine(day, self.close_of_business, self.zone)


def _weekday(name: Any, where: str) -> int:
    if not isinstance(name, str) or name.lower() not in WEEKDAYS:
        raise ValueError(f"{where}: {name!r} is not a weekday name ({', '.join(WEEKDAYS)})")
    return WEEKDAYS.index(name.lower())


def _only(obj: Any, keys: Iterable[str], where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ValueError(f"{where} must be an object")
    extra = set(obj) - set(keys)
    if extra:
        raise ValueError(f"{where}: unknown keys {sorted(extra)}")
    return obj


def _holiday(raw: Any, where: str) -> Holiday:
    raw = _only(raw, ("name", "month", "day", "weekday", "nth"), where)
    name, month = raw.get("name"), raw.get("month")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: a holiday needs a name")
    if not isinstance(month, int) or not 1 <= month <= 12:
        raise ValueError(f"{where} ({name}): month must be 1-12")
    fixed = "day" in raw
    ruled = "weekday" in raw or "nth" in raw
    if fixed == ruled:
        raise ValueError(f"{where} ({name}): give either day, or weekday and nth")
    if fixed:
        day = raw["day"]
        # 29 February exists one year in four: a yearly holiday cannot be on it.
        if not isinstance(day, int) or not 1 <= day <= _cal.monthrange(2023, month)[1]:
            raise ValueError(f"{where} ({name}): {month}/{day} is not a date of every year")
        return Holiday(name, month, day=day)
    nth = raw.get("nth")
    if not isinstance(nth, int) or nth not in (1, 2, 3, 4, -1):
        raise ValueError(f"{where} ({name}): nth must be 1, 2, 3, 4 or -1 (the last)")
    return Holiday(name, month, weekday=_weekday(raw.get("weekday"), where), nth=nth)


def _time(raw: Any, where: str) -> time:
    try:
        t = time.fromisoformat(raw) if isinstance(raw, str) else None
    except ValueError:
        t = None
    if t is None or t.tzinfo is not None:
        raise ValueError(f"{where}: {raw!r} is not a local time like '17:00'")
    return t


def parse_calendar(raw: Any, where: str = "calendar") -> Calendar:
    """The table's calendar, or ValueError naming what contradicts itself."""
    raw = _only(
        raw,
        ("note", "time_zone", "close_of_business", "weekend", "observed", "holidays", "closures"),
        where,
    )
    zone = raw.get("time_zone")
    try:
        ZoneInfo(zone) if isinstance(zone, str) else None
    except (ZoneInfoNotFoundError, ValueError):
        zone = None
    if not isinstance(zone, str):
        raise ValueError(f"{where}.time_zone: {raw.get('time_zone')!r} is not an IANA time zone")
    weekend_names = raw.get("weekend")
    if not isinstance(weekend_names, list):
        raise ValueError(f"{where}.weekend must list weekday names")
    weekend = [_weekday(n, f"{where}.weekend") for n in weekend_names]
    if len(set(weekend)) != len(weekend):
        raise ValueError(f"{where}.weekend names a day twice")
    if len(weekend) == 7:
        raise ValueError(f"{where}.weekend closes every day of the week")
    observed: dict[int, int] = {}
    obs = raw.get("observed", {})
    if not isinstance(obs, dict):
        raise ValueError(f"{where}.observed must map weekend days to a shift in days")
    for name, shift in obs.items():
        day = _weekday(name, f"{where}.observed")
        if day not in weekend:
            raise ValueError(f"{where}.observed.{name}: only a holiday on a weekend day moves")
        if not isinstance(shift, int) or shift == 0 or abs(shift) > 6:
            raise ValueError(f"{where}.observed.{name}: the shift is a day count from -6 to 6")
        if (day + shift) % 7 in weekend:
            raise ValueError(f"{where}.observed.{name}: the shift lands on another weekend day")
        observed[day] = shift
    holidays_raw = raw.get("holidays")
    if not isinstance(holidays_raw, list):
        raise ValueError(f"{where}.holidays must be a list")
    holidays = tuple(_holiday(h, f"{where}.holidays[{i}]") for i, h in enumerate(holidays_raw))
    names = [h.name for h in holidays]
    if len(set(names)) != len(names):
        raise ValueError(f"{where}.holidays: a holiday is named twice")
    rules = [(h.month, h.day, h.weekday, h.nth) for h in holidays]
    if len(set(rules)) != len(rules):
        raise ValueError(f"{where}.holidays: two holidays have the same rule")
    for h in holidays:
        if h.weekday is not None and h.weekday in weekend:
            raise ValueError(f"{where}.holidays ({h.name}): falls on a weekend day every year")
    closures_raw = raw.get("closures", [])
    if not isinstance(closures_raw, list):
        raise ValueError(f"{where}.closures must list ISO dates")
    closures: list[date] = []
    for c in closures_raw:
        try:
            closures.append(date.fromisoformat(c))
        except (TypeError, ValueError):
            raise ValueError(f"{where}.closures: {c!r} is not a date like 2026-12-24") from None
    if len(set(closures)) != len(closures):
        raise ValueError(f"{where}.closures lists a date twice")
    return Calendar(
        weekend=frozenset(weekend),
        holidays=holidays,
        observed=observed,
        closures=frozenset(closures),
        time_zone=zone,
        close_of_business=_time(
            raw.get("close_of_business", "17:00"), f"{where}.close_of_business"
        ),
    )
