"""The audit sink on the real database: bounded batches, a clean stop loses nothing, and
login events handed over from a worker thread are written like the others."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator

import pytest
from pymongo import AsyncMongoClient

from fhir_server.access.audit import AuditRecord, AuditSink
from fhir_server.app import build_context
from fhir_server.context import ServerContext
from tests.conftest import make_settings


@pytest.fixture
async def ctx(mongo_uri: str) -> AsyncIterator[ServerContext]:
    settings = make_settings(mongo_uri)
    client: AsyncMongoClient[dict] = AsyncMongoClient(mongo_uri)
    yield build_context(settings, client[settings.database])
    await client.drop_database(settings.database)
    await client.close()


async def test_close_writes_everything_in_bounded_batches(ctx: ServerContext) -> None:
    # A long interval: nothing is flushed by the timer, only by full batches and by close.
    sink = AuditSink(ctx.store, batch=50, interval=3600)
    sink.start()
    sizes: list[int] = []
    write = sink._write

    async def counting(events: list[dict]) -> None:
        sizes.append(len(events))
        await write(events)

    sink._write = counting  # type: ignore[method-assign]
    for i in range(175):
        await sink.record(AuditRecord("GET", ["Observation", f"o{i}"], status=200))
    await sink.close()
    assert sink.pending == [] and sink.written == 175
    assert sizes and max(sizes) <= 50
    # In the audit log's own collection, with no history version and nothing in `resources`.
    assert await ctx.store.db.audit.count_documents({"rt": "AuditEvent"}) == 175
    assert await ctx.store.history.count_documents({"rt": "AuditEvent"}) == 0
    assert await ctx.store.resources.count_documents({"rt": "AuditEvent"}) == 0


async def test_login_events_from_a_worker_thread(ctx: ServerContext) -> None:
    sink = AuditSink(ctx.store, interval=3600)
    sink.start()
    row = {
        "outcome": "success",
        "account": True,
        "fhirUser": "Patient/p1",
        "level": "dslogon-premium",
        "client_id": "app",
    }

    def logins() -> None:
        for _ in range(3):
            sink.record_threadsafe(row)

    thread = threading.Thread(target=logins)
    thread.start()
    thread.join()
    await sink.close()
    docs = [d async for d in ctx.store.db.audit.find({"rt": "AuditEvent"})]
    assert len(docs) == 3
    assert all(d["comp"] == ["Patient/p1"] for d in docs)
    assert {d["res"]["type"]["code"] for d in docs} == {"110114"}
