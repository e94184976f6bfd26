"""The booking rules of the table, as pure functions of the table, the caller's writer kind,
the patient's age and the clock: each answers None (allowed) or the reason it is refused,
which `$book`, `$hold`, `$find` and a plain write all give the same way (422
`business-rule`).
"""

from __future__ import annotations

from datetime import datetime

from fhir_server.portal.scheduling.table import SchedulingTable, VisitType


def role(table: SchedulingTable, kinds: tuple[str, ...]) -> str:
    """'staff', 'patient' or 'never' for the caller's writer kinds on the patient (the
    strictest of them: a token that is a parent of an adolescent books as a parent)."""
    if any(k in table.never_kinds for k in kinds):
        return "never"
    if kinds and all(k in table.staff_kinds for k in kinds):
        return "staff"
    return "patient"


def who_refused(vt: VisitType, kinds: tuple[str, ...], age: int | None) -> str | None:
    """Whether this caller may book `vt` for a patient of `age` (None: unknown)."""
    if vt.ages is not None:
        low, high = vt.ages
        if age is None or not low <= age <= high:
            return f"the visit type {vt.code} is for patients aged {low} to {high}"
    if "adolescent" in kinds and not vt.adolescent_proxy:
        return f"a parent may not book the visit type {vt.code} for an adolescent"
    return None


def online_refused(vt: VisitType) -> str | None:
    if not vt.online:
        return f"the visit type {vt.code} is by request only: send an appointment request"
    return None


def time_refused(vt: VisitType, start: datetime, now: datetime) -> str | None:
    """Lead time and horizon: no booking closer than the lead time, none past the horizon."""
    if start < now + vt.lead:
        minutes = int(vt.lead.total_seconds() // 60)
        return f"the visit type {vt.code} cannot be booked less than {minutes} minutes ahead"
    if start > now + vt.horizon:
        return f"the visit type {vt.code} cannot be booked more than {vt.horizon.days} days ahead"
    return None


def booking_refused(
    vt: VisitType, kinds: tuple[str, ...], age: int | None, start: datetime, now: datetime
) -> str | None:
    """Every rule a patient or proxy booking online must pass, first refusal first."""
    return who_refused(vt, kinds, age) or online_refused(vt) or time_refused(vt, start, now)
