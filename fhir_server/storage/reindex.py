"""Recompute the search index entries (`ix`, `comp`, `sk`) of every current resource.

Run after the search definitions change (`fhir-server reindex`). Each document is replaced
only if its version is unchanged, so a concurrent write is never overwritten. Types that
inherit compartments (profiles/access/compartments.json) get them again from their targets'
stored compartments, in a pass after every other type, so their targets have their new ones.
Types kept in a collection of their own (the audit log: storage/audit_store.py) are
reindexed there, by their own indexer.
"""

from __future__ import annotations

from typing import Any

from fhir_server.storage.store import ResourceStore

BATCH = 500


async def reindex(store: ResourceStore) -> int:
    count = 0
    for apart in store.separate.values():
        count += await _pass(apart, {}, inherit=False)
    inheriting = sorted(store.inheritance.types) if store.inheritance is not None else []
    if not inheriting:
        return count + await _pass(store, {}, inherit=False)
    # Targets first, so an inheriting document never holds its targets' old compartments
    # and never loses its inherited ones in between.
    count += await _pass(store, {"rt": {"$nin": inheriting}}, inherit=False)
    return count + await _pass(store, {"rt": {"$in": inheriting}}, inherit=True)


async def _pass(store: ResourceStore, scope: dict[str, Any], *, inherit: bool) -> int:
    count = 0
    last_id = ""
    while True:
        docs = await store.find(
            {"$and": [scope, {"_id": {"$gt": last_id}}]},
            {"res": 1, "vid": 1, "rt": 1},
            sort=[("_id", 1)],
            limit=BATCH,
            what="Reindexing",
        )
        if not docs:
            return count
        for doc in docs:
            ix, comp = store.indexer(doc["res"])
            if inherit:
                widened = {
                    "_id": doc["_id"],
                    "rt": doc["rt"],
                    "res": doc["res"],
                    "comp": comp,
                    "ix": ix,
                }
                await store.inherit_compartments(widened)
                comp, ix = widened["comp"], widened["ix"]
            await store.set_index_entries(doc["_id"], doc["vid"], ix, comp, doc["res"])
            count += 1
        last_id = docs[-1]["_id"]
