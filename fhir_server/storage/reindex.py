"""Recompute the search index entries (`ix`, `comp`, `sk`) of every current resource.

Run after the search definitions change (`fhir-server reindex`). Each document is replaced
only if its version is unchanged, so a concurrent write is never overwritten.
"""

from __future__ import annotations

from fhir_server.storage.store import ResourceStore

BATCH = 500


async def reindex(store: ResourceStore) -> int:
    count = 0
    last_id = ""
    while True:
        docs = await store.find(
            {"_id": {"$gt": last_id}},
            {"res": 1, "vid": 1},
            sort=[("_id", 1)],
            limit=BATCH,
            what="Reindexing",
        )
        if not docs:
            return count
        for doc in docs:
            ix, comp = store.indexer(doc["res"])
            await store.set_index_entries(doc["_id"], doc["vid"], ix, comp)
            count += 1
        last_id = docs[-1]["_id"]
