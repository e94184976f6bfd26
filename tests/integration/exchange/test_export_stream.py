"""`$export` files are streamed chunk by chunk, and each line is the stored resource's bytes.

The download sends a file as the chunks it was written in (`bulk_files`), never joined in
memory; the export reads each type from one cursor per window (docs/exchange.md, "Jobs
and expiry").
Bulk Data Access IG 2.0.0: https://hl7.org/fhir/uv/bulkdata/export.html
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from fhir_server.access.policy import AccessPolicy
from fhir_server.exchange import bulk_routes, bulk_run
from tests.conftest import make_settings, running_app
from tests.integration.exchange.test_bulk_export import BY_TYPE, kick_off, poll
from tests.integration.seeded import restore_seed

TYPES = ("Observation", "Patient", "Condition")


@pytest.fixture(scope="module")
async def client(mongo_uri: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(mongo_uri)
    await restore_seed(mongo_uri, settings.database, logins=False)
    async with running_app(settings) as c:
        yield c


async def _export(c: httpx.AsyncClient) -> tuple[str, dict[str, Any]]:
    location = await kick_off(c, "$export?_type=" + ",".join(TYPES))
    r = await poll(c, location)
    assert r.status_code == 200, r.text
    return location.rsplit("/", 1)[1], r.json()


async def _parts(c: httpx.AsyncClient, url: str) -> list[bytes]:
    """The body as the app sent it, one part per ASGI body message (httpx's ASGI
    transport joins them, so the app is called directly)."""
    path = httpx.URL(url).path
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8080"), (b"accept", b"application/fhir+ndjson")],
        "server": ("127.0.0.1", 8080),
        "client": ("127.0.0.1", 50000),
    }
    start: dict[str, Any] = {}
    parts: list[bytes] = []
    requested, done = False, asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await done.wait()  # the client stays until the whole body is sent
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
        elif message["type"] == "http.response.body":
            if message.get("body"):
                parts.append(message["body"])
            if not message.get("more_body"):
                done.set()

    await c.app(scope, receive, send)  # type: ignore[attr-defined]
    assert start["status"] == 200
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    assert headers["content-type"].startswith("application/fhir+ndjson")
    return parts


async def test_a_file_arrives_in_its_chunks_and_each_line_is_the_stored_resource(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small chunks, so the seed's Observations make a file of many (1 MiB in production).
    monkeypatch.setattr(bulk_run, "CHUNK_BYTES", 4096)
    job, manifest = await _export(client)
    db = client.app.state.ctx.store.db  # type: ignore[attr-defined]
    stored = {
        d["_id"]: d["res"]
        async for d in db.resources.find({"rt": {"$in": list(TYPES)}}, {"res": 1})
    }
    seen: dict[str, int] = {}
    for item in manifest["output"]:
        n = int(item["url"].rsplit("/", 1)[1])
        parts = await _parts(client, item["url"])
        chunks = await db.bulk_files.count_documents({"job": job, "n": n})
        assert len(parts) == chunks, (item["type"], len(parts), chunks)
        lines = b"".join(parts).splitlines()
        assert len(lines) == item["count"]
        for line in lines:
            res = orjson.loads(line)
            key = f"{res['resourceType']}/{res['id']}"
            assert res["resourceType"] == item["type"]
            # Byte for byte the stored resource as JSON (no re-shaping on the way).
            assert line == orjson.dumps(stored[key]), key
            seen[key] = seen.get(key, 0) + 1
    assert max(seen.values()) == 1
    assert set(seen) == set(stored)
    assert {rt: sum(k.startswith(rt + "/") for k in seen) for rt in TYPES} == {
        rt: BY_TYPE[rt] for rt in TYPES
    }
    obs = [o for o in manifest["output"] if o["type"] == "Observation"]
    assert obs and await db.bulk_files.count_documents({"job": job, "n": {"$gt": 0}}) > 10


async def test_keyset_windows_export_the_same_lines(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MongoDB's path (a query per window of `WINDOW` rows, `_id` after the last), run here
    with windows of 7 rows read 3 at a time: the same files as one query per type."""
    _, whole = await _export(client)
    monkeypatch.setattr(bulk_run, "WINDOW", 7)
    monkeypatch.setattr(bulk_run, "BATCH", 3)

    async def mongodb(db: Any) -> bool:
        return True

    monkeypatch.setattr(bulk_run, "uses_elem_match", mongodb)
    _, windowed = await _export(client)
    for a, b in zip(whole["output"], windowed["output"], strict=True):
        assert (a["type"], a["count"]) == (b["type"], b["count"])
        assert (await client.get(a["url"])).content == (await client.get(b["url"])).content


async def test_the_download_recheck_keeps_whole_lines_across_chunks(
    client: httpx.AsyncClient,
) -> None:
    """The per-line re-check of a confined caller's download, on chunks that cut lines."""
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    lines = [orjson.dumps({"resourceType": "Patient", "id": f"p{i}"}) + b"\n" for i in range(5)]
    data = b"".join(lines)

    async def chunks() -> AsyncGenerator[bytes]:
        for i in range(0, len(data), 7):
            yield data[i : i + 7]

    policy = AccessPolicy(compartments=("Patient/p1", "Patient/p3"))
    kept = b"".join([c async for c in bulk_routes._still_visible(ctx, policy, chunks())])
    assert kept == lines[1] + lines[3]
