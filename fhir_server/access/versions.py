"""The policy on history versions (https://hl7.org/fhir/R4/http.html#history).

History versions keep their compartments but no search index, so the compartment rules
cannot be ANDed into a history query as they stand. Instead:

- a compartment seen whole (the user's own, a clinician's) filters versions on `comp`;
- every other rule first finds the ids of the resources it shows *now* (one narrowed query
  on the current resources), and the versions are limited to those ids: a resource labelled
  in a later version, or moved out of reach, hides all its earlier versions too;
- versions that themselves carry a sensitive label are left out as well (a label removed
  later does not reveal the labelled version).

So paging and `Bundle.total` of a history stay right.
"""

from __future__ import annotations

from typing import Any

from fhir_server.access.family import load_table
from fhir_server.access.policy import AccessPolicy
from fhir_server.errors import TooCostly
from fhir_server.search.query import all_of, any_of
from fhir_server.storage.store import ResourceStore

Doc = dict[str, Any]
MAX_VISIBLE_IDS = 20_000


async def history_filter(store: ResourceStore, policy: AccessPolicy, rt: str | None) -> Doc:
    if policy.rules is None:
        if policy.compartments is None:
            return {}
        return {"comp": {"$in": list(policy.compartments)}}
    plain = [r.compartment for r in policy.rules if r.plain]
    others = [r for r in policy.rules if not r.plain]
    alts: list[Doc] = [{"comp": {"$in": plain}}] if plain else []
    if others:
        shown = [f for r in others if (f := r.to_filter(rt or "*")) is not None]
        ids: list[str] = []
        if shown:
            query = all_of([{"rt": rt} if rt else {}, any_of(shown)])
            found = await store.find(query, {"_id": 1}, limit=MAX_VISIBLE_IDS + 1)
            ids = [d["_id"] for d in found]
        if len(ids) > MAX_VISIBLE_IDS:
            raise TooCostly("the history is too large to show under this access policy; use _since")
        by_type: dict[str, list[str]] = {}
        for key in ids:
            t, rid = key.split("/", 1)
            by_type.setdefault(t, []).append(rid)
        id_alts = [{"rt": t, "id": {"$in": group}} for t, group in sorted(by_type.items())]
        if id_alts:
            conds: list[Doc] = [any_of(id_alts)]
            if any(r.hidden_keys for r in others):
                conds += _unlabelled()
            alts.append(all_of(conds))
    if policy.directory is not None:
        # Directory data (Practitioner, Slot...): its versions show as the resources do.
        shared = policy.directory.to_filter(rt or "*")
        if shared is not None:
            alts.append({"rt": rt, **shared} if rt else shared)
    if not alts:
        return {"_id": {"$in": []}}
    return {"$and": [alts[0] if len(alts) == 1 else {"$or": alts}]}


def _unlabelled() -> list[Doc]:
    """Versions carrying none of the sensitive labels (tested on the stored content)."""
    by_system: dict[str, list[str]] = {}
    for system, code in load_table().labels:
        by_system.setdefault(system, []).append(code)
    return [
        {"res.meta.security": {"$not": {"$elemMatch": {"system": s, "code": {"$in": codes}}}}}
        for s, codes in sorted(by_system.items())
    ]
