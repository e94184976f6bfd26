"""The route template of a request path, for the request log: the shape of the URL with
every value replaced by a placeholder (`/fhir/Patient/{id}/_history/{vid}`), so no id,
name or identifier of a patient reaches the logs (docs/rest.md, "Request log").

Only words the server itself defines are kept: resource types, `$operation` names of the
operation table, FHIR's `_history` / `_search` / `metadata`; anything else a client put in
the path becomes a placeholder.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fhir_server.operations.registry import OperationTable

FHIR_PREFIX = "/fhir"
FIXED = frozenset({"metadata", "_history", "_search", ".well-known"})


class RouteTemplates:
    def __init__(self, resource_types: Iterable[str], operations: Iterable[str]) -> None:
        self.types = frozenset(resource_types)
        self.operations = frozenset(operations)

    def fhir(self, segments: list[str]) -> str:
        out: list[str] = []
        previous = ""
        for seg in segments:
            if seg in FIXED or seg in self.operations or (seg in self.types and not out):
                word = seg
            elif seg.startswith("$"):
                word = "{operation}"
            elif previous == "_history":
                word = "{vid}"
            elif previous in self.types:
                word = "{id}"
            else:
                word = "{value}"
            out.append(word)
            previous = seg if word == seg else word
        return "/".join([FHIR_PREFIX, *out])

    def template(self, path: str, matched: str | None) -> str:
        """The template of `path`: the FHIR shape below /fhir, else the matched Starlette
        route's own path (`/auth/token`), else `{unmatched}`."""
        if path == FHIR_PREFIX or path.startswith(FHIR_PREFIX + "/"):
            segments = [s for s in path[len(FHIR_PREFIX) :].split("/") if s]
            if segments[:1] == [".well-known"] and matched:
                return matched
            return self.fhir(segments)
        return matched or "{unmatched}"


def for_table(table: OperationTable, resource_types: Iterable[str]) -> RouteTemplates:
    """The templates of this server: its types, its operations and their own URLs."""
    words = {f"${op.name}" for op in table.operations}
    words |= {r.segment for r in table.routes if r.segment.startswith("$")}
    return RouteTemplates(resource_types, words)
