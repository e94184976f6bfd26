"""A Slot's state as it is read: a hold (`busy-tentative` with the table's hold extension)
that ran out counts as free everywhere, computed with `clock.now()` (no background job).

The hold extension (`hold_extension` of the table) has two parts: `expires` (valueInstant)
and `appointment` (valueReference, the pending Appointment `$hold` wrote). A patient-facing
read never shows the second: a Slot is directory data, and who holds it is not.

Searches answer by the same rule (`status_filter`, registered by the workflow with
search/effective.py): the store keeps a held Slot's expiry beside it as `ak.h`
(access/stored_keys.py, on every write), so `status=free` also matches a `busy-tentative`
Slot whose `ak.h` has passed, and `status=busy-tentative` only one whose `ak.h` has not (or
that carries no expiry, which reads as held too: `effective_status`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fhir_server import clock
from fhir_server.portal.scheduling.table import SchedulingTable, load_table
from fhir_server.search.parse import Criterion, split_escaped, unescape
from fhir_server.search.query import all_of, any_of, keys_in, token_keys

Doc = dict[str, Any]
TAKEN = frozenset({"busy", "busy-unavailable", "entered-in-error"})
RT = "Slot"
HELD, FREE = "busy-tentative", "free"  # R4 slotstatus: a hold, and what it reads as once out
STATUS_PARAM = "status"  # Slot-status (R4 search parameter code)
HOLD_FIELD = "ak.h"  # the stored expiry of a hold (access/stored_keys.py)


def parse_instant(value: Any) -> datetime | None:
    if not isinstance(value, str) or len(value) < 16:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo is not None else None


def hold_of(table: SchedulingTable, slot: Doc) -> tuple[datetime | None, str | None]:
    """(expires, Appointment reference) of the Slot's hold, or (None, None)."""
    for ext in slot.get("extension") or ():
        if isinstance(ext, dict) and ext.get("url") == table.hold_extension:
            expires, appt = None, None
            for part in ext.get("extension") or ():
                if part.get("url") == "expires":
                    expires = parse_instant(part.get("valueInstant"))
                elif part.get("url") == "appointment":
                    appt = (part.get("valueReference") or {}).get("reference")
            return expires, appt
    return None, None


def live_hold(table: SchedulingTable, slot: Doc, now: datetime) -> str | None:
    """The Appointment holding the Slot now, or None (no hold, or it ran out)."""
    if slot.get("status") != "busy-tentative":
        return None
    expires, appt = hold_of(table, slot)
    if expires is None or expires <= now:
        return None
    return appt


def effective_status(table: SchedulingTable, slot: Doc, now: datetime) -> str:
    """The status as read at `now`: an expired hold is `free`."""
    status = str(slot.get("status"))
    if status == HELD:
        expires, _ = hold_of(table, slot)
        if expires is not None and expires <= now:
            return "free"
    return status


def without_hold(table: SchedulingTable, slot: Doc) -> Doc:
    out = {k: v for k, v in slot.items() if k != "meta"}
    ext = [e for e in out.get("extension") or () if e.get("url") != table.hold_extension]
    if ext:
        out["extension"] = ext
    else:
        out.pop("extension", None)
    return out


def held(table: SchedulingTable, slot: Doc, appointment: str, expires: datetime) -> Doc:
    out = without_hold(table, slot)
    out["status"] = "busy-tentative"
    out["extension"] = [
        *(out.get("extension") or ()),
        {
            "url": table.hold_extension,
            "extension": [
                {"url": "expires", "valueInstant": expires.isoformat().replace("+00:00", "Z")},
                {"url": "appointment", "valueReference": {"reference": appointment}},
            ],
        },
    ]
    return out


def with_status(table: SchedulingTable, slot: Doc, status: str) -> Doc:
    out = without_hold(table, slot)
    out["status"] = status
    return out


def shown(table: SchedulingTable, slot: Doc, now: datetime, staff: bool) -> None:
    """The read-time view of a Slot (in place): an expired hold reads as free; a live one
    keeps its expiry, and names its Appointment to staff only."""
    expires, _ = hold_of(table, slot)
    if expires is None:
        return
    if slot.get("status") != "busy-tentative" or expires <= now:
        if slot.get("status") == "busy-tentative":
            slot["status"] = "free"
        rest = [e for e in slot.get("extension") or () if e.get("url") != table.hold_extension]
        if rest:
            slot["extension"] = rest
        else:
            slot.pop("extension", None)
        return
    if not staff:
        for ext in slot.get("extension") or ():
            if ext.get("url") == table.hold_extension:
                ext["extension"] = [
                    p for p in ext.get("extension") or () if p.get("url") == "expires"
                ]


def held_until(rt: str, resource: Any) -> datetime | None:
    """The instant a held Slot's hold runs out, stored beside it as `ak.h`; None for any
    other resource, status or a hold without an expiry."""
    if rt != RT or not isinstance(resource, dict) or resource.get("status") != HELD:
        return None
    expires, _ = hold_of(load_table(), resource)
    return expires


def status_filter(c: Criterion) -> Doc | None:
    """`status` (and `status:not`) by the status read at `clock.now()`: an expired hold is
    free. Each value is index-served by its key(s) (`ix.k`), `ak.h` re-checked beside it."""
    if c.modifier not in (None, "not"):
        return None
    now = clock.now()
    expired: Doc = {HOLD_FIELD: {"$lte": now}}
    live: Doc = {HOLD_FIELD: {"$not": {"$lte": now}}}
    negate = c.modifier == "not"
    parts: list[Doc] = []
    for v in c.values:
        raw = split_escaped(v.value, "|")
        code = unescape("|".join(raw[1:]) if len(raw) > 1 else raw[0])
        keys = token_keys(c.code, v.value)
        if code == FREE:
            held_keys = token_keys(c.code, f"{raw[0]}|{HELD}" if len(raw) > 1 else HELD)
            if negate:
                parts.append(
                    all_of(
                        [
                            keys_in("ix.k", keys, negate=True),
                            any_of([keys_in("ix.k", held_keys, negate=True), live]),
                        ]
                    )
                )
            else:
                parts.append(
                    any_of([keys_in("ix.k", keys), all_of([keys_in("ix.k", held_keys), expired])])
                )
        elif code == HELD:
            if negate:
                parts.append(any_of([keys_in("ix.k", keys, negate=True), expired]))
            else:
                parts.append(all_of([keys_in("ix.k", keys), live]))
        else:
            parts.append(keys_in("ix.k", keys, negate=negate))
    # Values are OR-ed; under `:not` the resource has none of them (the AND of complements).
    return all_of(parts) if negate else any_of(parts)
