"""A pooled connection the database has closed costs no request (db/retry.py).

The database ends the server's idle pooled connections (`killOp` on SecantusDB closes a
connection's socket, as its 5-minute idle timeout and a restart do); the next transaction,
write and read on the pool each meet a closed socket first. Before the fix a transaction
(a Bundle, a PUT in its own transaction) answered 503 "connection is already closed"; reads
were already retried by the driver (`retryReads`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from tests.conftest import FHIR_JSON, make_settings, patient, running_app

MONITOR_OPS = ("hello", "ismaster", "isMaster")  # the driver's heartbeats: left alone


def drop_pooled_connections(uri: str) -> int:
    """Close, on the database's side, every connection of an async (FHIR) client's pool:
    not the heartbeat monitors (those would clear the pool, hiding the closed sockets), not
    the authorization server's synchronous client, not this admin connection."""
    with MongoClient(uri, directConnection=True) as admin:
        ops = admin.admin.command("currentOp", {"$all": True})["inprog"]
        pooled = [
            o["opid"]
            for o in ops
            if "async" in str((o.get("clientMetadata") or {}).get("driver", {}).get("name"))
            and o.get("op") not in MONITOR_OPS
        ]
        for opid in pooled:
            admin.admin.command("killOp", op=opid)
    return len(pooled)


@pytest.fixture(scope="module")
async def app(mongo_uri: str) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    async with running_app(make_settings(mongo_uri)) as client:
        yield client, mongo_uri


def bundle(pid: str) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": patient(id=pid),
                "request": {"method": "PUT", "url": f"Patient/{pid}"},
            },
            {
                "fullUrl": "urn:uuid:0b7f8a3e-5d4c-4f5e-9a1b-2c3d4e5f6a7b",
                "resource": patient(),
                "request": {"method": "POST", "url": "Patient"},
            },
        ],
    }


async def test_transactions_writes_and_reads_survive_dropped_connections(
    app: tuple[httpx.AsyncClient, str],
) -> None:
    client, uri = app
    r = await client.put("Patient/dropped-a", json=patient(id="dropped-a"), headers=FHIR_JSON)
    assert r.status_code == 201, r.text
    # A transaction Bundle: every entry written once, none twice, after the retry.
    assert await asyncio.to_thread(drop_pooled_connections, uri) > 0
    r = await client.post("", json=bundle("dropped-b"), headers=FHIR_JSON)
    assert r.status_code == 200, r.text
    statuses = [e["response"]["status"] for e in r.json()["entry"]]
    assert [s.split()[0] for s in statuses] == ["201", "201"], statuses
    created = r.json()["entry"][1]["response"]["location"].split("/_history")[0]
    hist = (await client.get(f"{created}/_history")).json()
    assert hist["total"] == 1
    # A single write, in a transaction of its own.
    assert await asyncio.to_thread(drop_pooled_connections, uri) > 0
    r = await client.put(
        "Patient/dropped-a", json=patient(id="dropped-a", gender="male"), headers=FHIR_JSON
    )
    assert r.status_code == 200, r.text
    assert r.headers["etag"] == 'W/"2"'
    # A read (the driver's own retry; here so that it stays so).
    assert await asyncio.to_thread(drop_pooled_connections, uri) > 0
    r = await client.get("Patient/dropped-a")
    assert r.status_code == 200 and r.json()["gender"] == "male"
