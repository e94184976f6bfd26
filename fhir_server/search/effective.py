"""Search parameters answered by the value a resource has when it is read, not the one stored.

A workflow whose rule is computed on read (a Slot hold that ran out reads as free:
portal/scheduling/slots.py) registers, per (resource type, parameter code), a builder that
turns the criterion into a filter at `clock.now()`, over its index keys and an instant the
store keeps beside the document (`ak`, access/stored_keys.py) - the same mechanism as a
result's release instant `ak.r`. The search layer names no type or parameter itself: it asks
here (execute.py) before compiling a criterion the plain way.

Builders are registered once at start-up (`Workflows.build`); registering the same pair again
replaces the builder (every app built in one process parses the same table).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fhir_server.search.parse import Criterion

# (criterion) -> filter, or None to compile the criterion the plain way (a modifier the
# builder does not rewrite).
Builder = Callable[[Criterion], dict[str, Any] | None]

_builders: dict[tuple[str, str], Builder] = {}


def register(rt: str, code: str, builder: Builder) -> None:
    _builders[(rt, code)] = builder


def filter_for(rt: str | None, c: Criterion) -> dict[str, Any] | None:
    """The read-time filter of `c` on type `rt`, or None when no workflow rewrites it."""
    if rt is None or c.chain or c.has:
        return None
    builder = _builders.get((rt, c.code))
    return builder(c) if builder is not None else None
