"""The resources outside every patient compartment that a page of `$everything` refers to.

https://hl7.org/fhir/R4/patient-operation-everything.html: the server "returns whatever
resources are needed to support the records - e.g. linked practitioners, medications,
locations, organizations etc.". The references are read through the search index (every
reference search parameter of the resource's type, as `_include=*` does), then fetched
in one query per target type for the whole page, narrowed by the access policy like any
include. A resource inside a compartment is never an include: it is a match of its own
patient's record, or not the caller's to see.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fhir_server.search.execute import TypeFilter
from fhir_server.search.extract import LOCAL_REF, reference_frags
from fhir_server.search.query import all_of
from fhir_server.search.registry import Registry
from fhir_server.storage.store import ResourceStore

Doc = dict[str, Any]
# Stored documents in no patient compartment (the store always writes `comp`).
OUTSIDE: Doc = {"comp": {"$size": 0}}


def targets(registry: Registry, resources: Iterable[Doc]) -> list[str]:
    """`Type/id` of every local reference, by each type's reference search parameters,
    evaluated as the indexer does (only those parameters: a whole re-index costs ten times
    more on a page of a thousand)."""
    out: dict[str, None] = {}
    for r in resources:
        rt = str(r.get("resourceType"))
        evaluators = registry.evaluators(rt)
        for code, p in registry.params_for(rt).items():
            ev = evaluators.get(code)
            if p.type != "reference" or ev is None:
                continue
            for node in ev(r):
                for x in reference_frags(node)[0]:
                    m = LOCAL_REF.fullmatch(x)  # `Type/id`, a version dropped
                    if m:
                        out[f"{m.group(1)}/{m.group(2)}"] = None
    return list(out)


async def fetch(
    store: ResourceStore,
    refs: Iterable[str],
    *,
    type_filter: TypeFilter | None,
    limit: int,
) -> list[Doc]:
    """The stored documents (`res`, and the `comp` and `ak` the post-check tests) of the
    referenced resources outside every compartment, at most `limit`, each query ANDed
    with the policy's filter for its type."""
    by_type: dict[str, list[str]] = {}
    for ref in refs:
        by_type.setdefault(ref.split("/", 1)[0], []).append(ref)
    found: list[Doc] = []
    for rt in sorted(by_type):
        room = limit - len(found)
        if room <= 0:
            break
        filt = all_of([{"_id": {"$in": by_type[rt]}}, OUTSIDE])
        if type_filter is not None:
            filt = all_of([filt, type_filter(rt)])
        found += await store.find(
            filt, {"res": 1, "comp": 1, "ak": 1, "wf": 1}, limit=room, what="$everything"
        )
    return found
