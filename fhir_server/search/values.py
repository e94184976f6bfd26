"""Value encodings shared by index extraction and query building.

Index keys are plain strings so that every parameter type lands in a flat multikey array
(DESIGN.md: index-friendly on both MongoDB and SecantusDB). Ordered values (dates, numbers,
quantities) are encoded so that string order is value order:

- dates as fixed-width UTC instants `YYYY-MM-DDTHH:MM:SS.fffZ`, a partial date becoming the
  range it covers (https://hl7.org/fhir/R4/search.html#date);
- numbers as the 16 hex digits of their IEEE-754 double with the sign handled
  (order-preserving);
- strings case- and accent-folded (https://hl7.org/fhir/R4/search.html#string).
"""

from __future__ import annotations

import calendar
import re
import struct
import unicodedata
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

MIN_INSTANT = "0001-01-01T00:00:00.000Z"
MAX_INSTANT = "9999-12-31T23:59:59.999Z"

_DATE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2})(?::(?P<M>\d{2})(?::(?P<S>\d{2})(?P<f>\.\d+)?)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


_FIRST = datetime(1, 1, 1)
_LAST = datetime(9999, 12, 31, 23, 59, 59, 999000)


def _fmt(dt: datetime) -> str:
    # Not strftime: its `%Y` does not zero-pad years below 1000 on glibc ("1-01-01"), which
    # breaks the fixed width that makes string order value order.
    return (
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:"
        f"{dt.second:02d}.{dt.microsecond // 1000:03d}Z"
    )


def shift(dt: datetime, delta: timedelta) -> datetime:
    """`dt + delta`, held within the instants that can be written (years 1 to 9999)."""
    try:
        return dt + delta
    except OverflowError:
        return _LAST if delta > timedelta(0) else _FIRST


def date_range(text: str) -> tuple[str, str] | None:
    """The [start, end] instants (inclusive, ms) that a FHIR date/dateTime/instant covers."""
    m = _DATE.match(text.strip())
    if not m:
        return None
    try:
        y = int(m["y"])
        if m["m"] is None:
            lo, hi = datetime(y, 1, 1), datetime(y, 12, 31, 23, 59, 59, 999000)
        elif m["d"] is None:
            mo = int(m["m"])
            last = calendar.monthrange(y, mo)[1]
            lo, hi = datetime(y, mo, 1), datetime(y, mo, last, 23, 59, 59, 999000)
        elif m["H"] is None:
            lo = datetime(y, int(m["m"]), int(m["d"]))
            hi = lo.replace(hour=23, minute=59, second=59, microsecond=999000)
        else:
            lo = datetime(y, int(m["m"]), int(m["d"]), int(m["H"]), int(m["M"] or 0))
            if m["M"] is None:
                width = timedelta(hours=1)
            elif m["S"] is None:
                width = timedelta(minutes=1)
            else:
                lo = lo.replace(second=int(m["S"]))
                frac = m["f"]
                if frac:
                    digits = frac[1:7].ljust(6, "0")
                    lo = lo.replace(microsecond=int(digits) // 1000 * 1000)
                    width = timedelta(milliseconds=1)
                else:
                    width = timedelta(seconds=1)
            hi = shift(lo, width - timedelta(milliseconds=1))
            tz = m["tz"]
            if tz and tz != "Z":
                sign = 1 if tz[0] == "+" else -1
                off = timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6])) * sign
                # Year 1 at +14:00 or year 9999 at -14:00 falls outside datetime's range:
                # held at the first or last instant rather than refused.
                lo, hi = shift(lo, -off), shift(hi, -off)
    except (ValueError, OverflowError):
        return None
    return _fmt(lo), _fmt(hi)


def instant(dt: datetime) -> str:
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return _fmt(dt)


def parse_instant(text: str) -> datetime:
    """Inverse of the fixed-width encoding (naive UTC), for comparisons with `lu`."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")


def num_key(x: float) -> str:
    """Order-preserving fixed-width string for a float."""
    (bits,) = struct.unpack(">Q", struct.pack(">d", float(x)))
    bits = bits ^ 0xFFFFFFFFFFFFFFFF if bits >> 63 else bits | (1 << 63)
    return f"{bits:016x}"


def parse_decimal(text: str) -> Decimal | None:
    try:
        d = Decimal(text.strip())
    except (InvalidOperation, ValueError):
        return None
    return d if d.is_finite() else None


def precision_range(d: Decimal) -> tuple[float, float]:
    """The implicit range of a search number: 100 means [99.5, 100.5)
    (https://hl7.org/fhir/R4/search.html#number)."""
    exp = d.as_tuple().exponent
    half = Decimal(5).scaleb(int(exp) - 1) if isinstance(exp, int) else Decimal(0)
    return float(d - half), float(d + half)


def norm(text: str) -> str:
    """Case- and accent-insensitive form of a string, whitespace collapsed."""
    nfkd = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in nfkd if not unicodedata.combining(c))
    return " ".join(stripped.casefold().split())


_WORD = re.compile(r"[^\W_]+")
WORD_MIN = 2  # one-letter words ("s" of "driver's") are neither indexed nor searched
WORD_MAX = 40  # longer runs (hashes, base64) are cut here


def words(text: str) -> list[str]:
    """Whole words of `text`, folded like strings (case and accents ignored), in order of
    first appearance: the unit of `_text` and `_content` (docs/search.md)."""
    seen: dict[str, None] = {}
    for w in _WORD.findall(norm(text)):
        if len(w) >= WORD_MIN:
            seen.setdefault(w[:WORD_MAX], None)
    return list(seen)


UCUM = "http://unitsofmeasure.org"
_PREFIX = {"": 1.0, "k": 1e3, "d": 1e-1, "c": 1e-2, "m": 1e-3, "u": 1e-6, "n": 1e-9, "p": 1e-12}
_BASE = ("g", "L", "l", "m", "s", "mol", "eq", "[IU]", "U")
_TIME = {"min": 60.0, "h": 3600.0, "d": 86400.0, "wk": 604800.0}


def ucum_canonical(value: float, code: str) -> tuple[float, str]:
    """Normalise simple UCUM units (metric prefixes, time) to their base unit.

    Only single-unit codes and `x/y` ratios of them are handled; anything else is returned
    unchanged, so it still matches itself exactly.
    """

    def one(u: str) -> tuple[float, str] | None:
        if u in _TIME:
            return _TIME[u], "s"
        for base in _BASE:
            if u.endswith(base):
                p = u[: -len(base)]
                if p in _PREFIX:
                    b = "L" if base == "l" else base
                    return _PREFIX[p], b
        return None

    parts = code.split("/")
    if len(parts) == 1:
        r = one(code)
        return (value * r[0], r[1]) if r else (value, code)
    if len(parts) == 2:
        a, b = one(parts[0]), one(parts[1])
        if a and b:
            return value * a[0] / b[0], f"{a[1]}/{b[1]}"
    return value, code
