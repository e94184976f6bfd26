"""The clock of the rules that are computed on read: a scheduling hold that ran out, a
booking's lead time, a prescription's refill window, a result hold's expiry.

Each of those asks `now()` here, so a test can fix the day (`fixed`) and check a rule on both
sides of its boundary without waiting; everything else (version timestamps, audit times) keeps
the store's own clock. In a running server `now()` is the wall clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

_fixed: datetime | None = None


def now() -> datetime:
    """The current instant (UTC, to the millisecond, as BSON keeps it)."""
    t = _fixed if _fixed is not None else datetime.now(UTC)
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


@contextmanager
def fixed(at: datetime) -> Iterator[None]:
    """Within the block, `now()` answers `at` (tests of in-process servers only)."""
    global _fixed
    if at.tzinfo is None:
        raise ValueError("a fixed clock needs an aware datetime")
    before, _fixed = _fixed, at.astimezone(UTC)
    try:
        yield
    finally:
        _fixed = before
