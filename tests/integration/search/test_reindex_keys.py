"""`fhir-server reindex` writes the word (`_text`, `_content`) and `:of-type` keys into
resources stored before they existed."""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient

from fhir_server.search.execute import run_search
from fhir_server.search.extract import compartments, index_entries
from fhir_server.search.indexes import index_models
from fhir_server.search.parse import parse_search
from fhir_server.storage.reindex import reindex
from fhir_server.storage.store import ResourceStore

V2 = "http://terminology.hl7.org/CodeSystem/v2-0203"
PATIENT = {
    "resourceType": "Patient",
    "text": {
        "status": "generated",
        "div": '<div xmlns="http://www.w3.org/1999/xhtml">Zoë Quirke</div>',
    },
    "identifier": [{"type": {"coding": [{"system": V2, "code": "MR"}]}, "value": "77"}],
    "name": [{"family": "Quirke", "given": ["Zoë"]}],
}
NEW_KEYS = ("_text=", "_content=", ":of-type=")


async def test_reindex_adds_the_new_keys(mongo_uri: str, registry: Any) -> None:
    def old_indexer(r: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        ix = index_entries(r, registry)
        ix["k"] = [k for k in ix["k"] if not any(n in k for n in NEW_KEYS)]
        return ix, compartments(r, registry)

    def indexer(r: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        return index_entries(r, registry), compartments(r, registry)

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri)
    try:
        await client.drop_database("reindex_keys")
        db = client["reindex_keys"]
        await db["resources"].create_indexes(index_models())
        store = ResourceStore(db, old_indexer)
        written = await store.create("Patient", dict(PATIENT))
        queries = [
            [("_text", "zoe")],
            [("_content", "QUIRKE zoe")],
            [("identifier:of-type", f"{V2}|MR|77")],
        ]

        async def found(params: list[tuple[str, str]]) -> int:
            page = await run_search(db, registry, parse_search("Patient", params, registry))
            return len(page.resources)

        assert [await found(q) for q in queries] == [0, 0, 0]  # written before the keys existed
        store.indexer = indexer
        assert await reindex(store) == 1
        assert [await found(q) for q in queries] == [1, 1, 1]
        doc = await db["resources"].find_one({"_id": f"Patient/{written.version.id}"})
        assert doc is not None
        assert {"_text=zoe", "_text=quirke", "_content=zoe", "_content=quirke"} <= set(
            doc["ix"]["k"]
        )
    finally:
        await client.drop_database("reindex_keys")
        await client.close()
