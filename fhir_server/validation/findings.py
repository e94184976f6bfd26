"""What a validation layer found, and where, before it becomes an OperationOutcome issue.

Each layer reports a location as the sequence of JSON keys and array indexes that leads to
the faulty element. This module is the one place that turns such a sequence into the simple
FHIRPath form that ``OperationOutcome.issue.expression`` carries, e.g.
``Patient.name[0].given[1]``
(https://hl7.org/fhir/R4/operationoutcome-definitions.html#OperationOutcome.issue.expression),
so the layers agree on locations and their duplicates can be recognised.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from fhir_server.errors import Issue

PathPart = str | int
Path = tuple[PathPart, ...]


def to_expression(resource_type: str, path: Iterable[PathPart]) -> str:
    """``("name", 0, "given", 1)`` on a Patient -> ``Patient.name[0].given[1]``."""
    out = [resource_type]
    for part in path:
        out.append(f"[{part}]" if isinstance(part, int) else f".{part}")
    return "".join(out)


@dataclass(frozen=True)
class Finding:
    """One problem at one location, relative to the resource being checked."""

    code: str
    diagnostics: str
    path: Path = ()

    def to_issue(self, resource_type: str) -> Issue:
        return Issue(
            code=self.code,
            diagnostics=self.diagnostics,
            expression=(to_expression(resource_type, self.path),),
        )


def label(path: Path) -> str:
    """The element a path ends at, for diagnostics: ``'given[1]'``, ``'gender'``."""
    index = ""
    for part in reversed(path):
        if isinstance(part, int):
            index = f"[{part}]{index}"
        else:
            return repr(f"{part}{index}")
    return "the resource"


def short(value: object, limit: int = 60) -> str:
    """A value quoted for a diagnostic, cut so a huge input cannot flood the outcome."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
