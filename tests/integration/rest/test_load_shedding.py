"""The audit backlog is bounded: with the database gone and the backlog full, every request
answers 503 with Retry-After at once (nothing is served that cannot be audited, nothing
hangs on the log); once the database is back the backlog drains, every queued event is
written and requests are served again."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from pymongo import AsyncMongoClient

from fhir_server.access.audit import AuditRecord
from fhir_server.db.embedded import EmbeddedDatabase
from tests.conftest import make_settings, running_app

BACKLOG = 100


async def test_full_audit_backlog_sheds_then_drains(tmp_path: Path) -> None:
    db = EmbeddedDatabase(tmp_path / "db")
    uri = await asyncio.to_thread(db.start)
    port = db.port
    settings = make_settings(uri, auth_required=True, audit_max_pending=BACKLOG, db_timeout_ms=1000)
    try:
        async with running_app(settings) as client:
            sink = client.app.state.audit  # type: ignore[attr-defined]
            assert (await client.get("Patient")).status_code == 401  # served: no token
            await asyncio.sleep(1)  # that refusal's own event is written
            await asyncio.to_thread(db.stop)
            for i in range(BACKLOG):
                await sink.record(AuditRecord("GET", ["Patient", f"p{i}"], status=200))
            assert sink.full
            started = time.monotonic()
            for path in ("Patient", "metadata"):
                r = await client.get(path)
                assert r.status_code == 503, r.text
                assert r.headers["retry-after"]
                assert r.json()["issue"][0]["code"] == "transient"
            token = await client.post("/auth/token", data={"grant_type": "client_credentials"})
            assert token.status_code == 503  # logins are audited too: refused alike
            assert time.monotonic() - started < 2  # refused at once, not after a timeout
            db = EmbeddedDatabase(tmp_path / "db", port=port)
            await asyncio.to_thread(db.start)
            for _ in range(100):
                if not sink.full and (await client.get("Patient")).status_code == 401:
                    break
                await asyncio.sleep(0.2)
            assert (await client.get("Patient")).status_code == 401
            await asyncio.sleep(1.5)
            raw: AsyncMongoClient[dict] = AsyncMongoClient(uri)
            try:
                reads = await raw[settings.database].audit.count_documents(
                    {"rt": "AuditEvent", "res.entity.what.reference": {"$regex": "^Patient/p"}}
                )
            finally:
                await raw.close()
            assert reads == BACKLOG  # every queued event written, none lost
    finally:
        await asyncio.to_thread(db.stop)
