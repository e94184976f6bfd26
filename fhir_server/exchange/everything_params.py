"""The input parameters of `Patient/$everything`, as the operation table's parser
(fhir_server/operations/params.py) read them from the query string, a form or a Parameters
body, checked here for what they mean.

https://hl7.org/fhir/R4/patient-operation-everything.html: `start`, `end` (date, 0..1),
`_since` (instant, 0..1), `_type` (code, 0..*, comma-separated types) and `_count`
(integer, 0..1). Bad or unknown parameters follow `Prefer: handling` as search does
(https://hl7.org/fhir/R4/search.html#errors): strict answers 400, lenient drops them and
the Bundle carries a warning.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from fhir_server.errors import BadRequest, FhirError
from fhir_server.search.parse import MAX_COUNT
from fhir_server.search.values import date_range

IGNORED = ("_format", "_pretty")  # rendering options, handled by the REST layer
SINGLE = ("start", "end", "_since", "_count", "_cursor")


@dataclass(frozen=True)
class EverythingParams:
    start: str | None = None
    end: str | None = None
    since: str | None = None
    types: tuple[str, ...] = ()  # empty: every type
    # The spec asks for the whole record in one Bundle unless the client pages: so the
    # default page is the largest a search may ask for.
    count: int = MAX_COUNT
    cursor: str | None = None
    used: tuple[tuple[str, str], ...] = ()  # as applied, for the self and next links
    dropped: tuple[tuple[str, str, str], ...] = ()  # (name, value, why) under lenient

    def wants(self, resource_type: str) -> bool:
        return not self.types or resource_type in self.types


def _date(name: str, value: str) -> str:
    if date_range(value) is None:
        raise BadRequest(f"{name} must be a FHIR date, not {value!r}")
    return value


def _types(value: str, known: Collection[str]) -> tuple[str, ...]:
    asked = tuple(t.strip() for t in value.split(","))
    bad = [t for t in asked if t not in known]
    if bad or not asked:
        raise BadRequest(f"Unknown resource type(s) in _type: {','.join(bad) or value!r}")
    return asked


def _count(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise BadRequest(f"_count must be a positive integer, not {value!r}")
    return min(int(value), MAX_COUNT)


def parse_params(
    params: Iterable[tuple[str, str]], known_types: Collection[str], *, strict: bool
) -> EverythingParams:
    opts: dict[str, Any] = {}
    types: list[str] = []
    used: list[tuple[str, str]] = []
    dropped: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for name, value in params:
        if name in IGNORED:
            continue
        try:
            if name in SINGLE and name in seen:
                raise BadRequest(f"{name} may be given only once")
            seen.add(name)
            if name in ("start", "end"):
                opts[name] = _date(name, value)
            elif name == "_since":
                opts["since"] = _date(name, value)
            elif name == "_type":
                types += [t for t in _types(value, known_types) if t not in types]
            elif name == "_count":
                opts["count"] = _count(value)
            elif name == "_cursor":
                opts["cursor"] = value
                continue  # the Bundle writes its own paging links
            else:
                raise BadRequest(f"Unknown parameter {name!r} for $everything")
            used.append((name, value))
        except FhirError as e:
            if strict:
                raise
            dropped.append((name, value, e.diagnostics))
    start, end = opts.get("start"), opts.get("end")
    if start and end:
        lo, hi = date_range(start), date_range(end)
        if lo and hi and lo[0] > hi[1]:
            raise BadRequest(f"start {start!r} is after end {end!r}")
    return EverythingParams(**opts, types=tuple(types), used=tuple(used), dropped=tuple(dropped))
