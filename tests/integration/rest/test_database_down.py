"""With the database down, requests answer 503 with an OperationOutcome and recover after."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from fhir_server.db.embedded import EmbeddedDatabase
from tests.conftest import FHIR_JSON, make_settings, patient, running_app


async def test_503_while_down_then_recovers(tmp_path: Path):
    db = EmbeddedDatabase(tmp_path / "db")
    uri = await asyncio.to_thread(db.start)
    port = db.port
    try:
        async with running_app(make_settings(uri, db_timeout_ms=1000)) as client:
            r = await client.put("Patient/up", json=patient(id="up"), headers=FHIR_JSON)
            assert r.status_code == 201
            await asyncio.to_thread(db.stop)
            started = time.monotonic()
            down = await client.get("Patient/up")
            assert down.status_code == 503
            assert down.json()["issue"][0]["code"] == "transient"
            assert down.headers["retry-after"]
            assert time.monotonic() - started < 10
            write = await client.put(
                "Patient/up", json=patient(id="up", gender="male"), headers=FHIR_JSON
            )
            assert write.status_code == 503
            db = EmbeddedDatabase(tmp_path / "db", port=port)
            await asyncio.to_thread(db.start)
            for _ in range(50):
                back = await client.get("Patient/up")
                if back.status_code == 200:
                    break
                await asyncio.sleep(0.2)
            assert back.status_code == 200
            assert back.json().get("gender") is None  # the refused write did not land
    finally:
        await asyncio.to_thread(db.stop)
