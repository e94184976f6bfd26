"""Query-qualified SMART scopes (`user/Observation.rs?category=laboratory`) as MongoDB filters.

SMART App Launch 2.2, "Finer-grained resource constraints using search parameters"
(https://hl7.org/fhir/smart-app-launch/STU2.2/scopes-and-launch-context.html): the server
applies the scope's query as if the client had added it. The query is parsed by the one
search parser, so it means exactly what the same search would.

Two rules keep a scope from becoming an oracle on data its caller may not see:

- every sub-query of a scope (`_has`, chains, `:in` value sets) runs under the caller's own
  policy: the compartment rules and the filters of the plain (sub-query free) scopes. A type
  whose own scope has sub-queries counts as showing nothing inside another scope's sub-query,
  so no scope reads through another one's unfinished filter;
- a wildcard type with a query (`user/*.rs?category=...`) is enforced on every type: a type
  whose search parameters cannot express the query gets nothing from that scope.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from fhir_server.errors import BadRequest, NotSupported
from fhir_server.search.execute import criteria_filter
from fhir_server.search.parse import Criterion, SearchRequest, parse_search
from fhir_server.search.query import NOTHING, all_of, any_of
from smart_auth import Scope

Doc = dict[str, Any]
TypeFilter = Callable[[str], Doc]
# Scope letters of the interactions a scope filter narrows (read, vread, history, search).
READS = ("r", "s")


def restricted_types(scopes: Iterable[Scope], all_types: Iterable[str]) -> list[str]:
    """Types some query-qualified scope may narrow: every type when one names `*`."""
    queried = [s for s in scopes if s.query]
    if any(s.resource_type == "*" for s in queried):
        return sorted(all_types)
    return sorted({s.resource_type for s in queried})


def _nested(c: Criterion) -> bool:
    if c.has is not None or c.chain:
        return True
    return c.type == "token" and c.modifier in ("in", "not-in")


def _parse(rt: str, scope: Scope, registry: Any) -> SearchRequest | None:
    """The scope's query as a search on `rt`; None when a wildcard scope's query cannot be
    asked of `rt` (then that scope grants nothing on `rt`). A named type's unparsable query
    is the caller's error (400), as the same search would be."""
    try:
        return parse_search(rt, list(scope.query or ()), registry, strict=True)
    except (BadRequest, NotSupported):
        if scope.resource_type == "*":
            return None
        raise


async def build(
    db: Any,
    registry: Any,
    scopes: tuple[Scope, ...],
    base: TypeFilter,
) -> dict[str, Doc]:
    """Per type, the filter its query-qualified scopes allow (alternatives ORed).

    `base(rt)` is the caller's policy without scope filters (compartments, family rules,
    directory types, types not granted at all)."""
    requests: dict[str, list[SearchRequest]] = {}
    for rt in restricted_types(scopes, registry.resource_types):
        granting = [s for s in scopes if any(s.allows(rt, p) for p in READS)]
        if not granting or any(s.query is None for s in granting):
            continue  # not granted (the policy refuses it) or granted whole
        parsed = [_parse(rt, s, registry) for s in granting]
        requests[rt] = [r for r in parsed if r is not None]
    nested = {
        rt for rt, reqs in requests.items() if any(_nested(c) for r in reqs for c in r.criteria)
    }
    out: dict[str, Doc] = {}
    for rt, reqs in requests.items():
        if rt not in nested:
            out[rt] = any_of([await criteria_filter(db, registry, r) for r in reqs])

    def inner(rt: str) -> Doc:
        if rt in nested:
            return NOTHING
        scoped = out.get(rt)
        return base(rt) if scoped is None else all_of([base(rt), scoped])

    for rt in sorted(nested):
        out[rt] = any_of([await criteria_filter(db, registry, r, inner) for r in requests[rt]])
    return out


def across_types(filters: dict[str, Doc]) -> Doc | None:
    """The scope filters of a search across types (`_type=...` or none): a resource of a
    narrowed type must match its type's filter; None when no type is narrowed."""
    if not filters:
        return None
    alts: list[Doc] = [{"rt": {"$nin": sorted(filters)}}]
    alts += [all_of([{"rt": rt}, f]) for rt, f in sorted(filters.items()) if f != NOTHING]
    return {"$or": alts}
