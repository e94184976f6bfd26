"""Request logs (issue 16, developer experience item 5): one JSON line per request with a
request id, method, route template, status, latency and client id, never a query value; a
database outage logs once when it starts and once when it ends."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhir_server.db.embedded import EmbeddedDatabase
from tests.conftest import FHIR_JSON, make_settings, patient, running_app

ROOT = "http://127.0.0.1:8080"
SECRET = "Zzsecretfamily"


@pytest.fixture(scope="module")
async def http(mongo_uri: str) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(make_settings(mongo_uri)) as client:
        yield client


def lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "fhir_server.requests"]


def everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    """What the server logged (the test's own HTTP client logs its URLs: not the server)."""
    return "\n".join(
        r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))
    )


async def test_a_line_per_request_with_the_template_and_no_values(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    made = await http.put(
        "Patient/zz-secret-id-77",
        json=patient(id="zz-secret-id-77", name=[{"family": SECRET}]),
        headers=FHIR_JSON,
    )
    assert made.status_code in (200, 201)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        found = await http.get(
            "Patient",
            params={"family": SECRET, "birthdate": "1970-01-01", "zzSecretName": "x"},
            headers={"X-Request-Id": "trace-abc.123", "Prefer": "handling=lenient"},
        )
        read = await http.get("Patient/zz-secret-id-77/_history/1")
        root = await http.get(f"{ROOT}/")
    assert found.status_code == 200 and found.headers["x-request-id"] == "trace-abc.123"
    assert len(read.headers["x-request-id"]) == 32  # generated when absent
    assert root.status_code == 200
    search, vread, landing = lines(caplog)
    assert search == {
        "request_id": "trace-abc.123",
        "method": "GET",
        "route": "/fhir/Patient",
        "status": 200,
        "ms": search["ms"],
        "client_id": None,
        "query": ["family", "birthdate", "(1 other)"],
    }
    assert isinstance(search["ms"], float) and search["ms"] >= 0
    assert vread["route"] == "/fhir/Patient/{id}/_history/{vid}"
    assert vread["request_id"] == read.headers["x-request-id"]
    assert landing["route"] == "/"
    logged = everything_logged(caplog)
    for value in (SECRET, "zz-secret-id-77", "1970-01-01", "zzSecretName"):
        assert value not in logged


async def test_a_request_id_that_is_not_an_id_is_replaced(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        answer = await http.get("metadata", headers={"X-Request-Id": f"{SECRET} <x>"})
    rid = answer.headers["x-request-id"]
    assert rid != f"{SECRET} <x>" and len(rid) == 32
    assert SECRET not in everything_logged(caplog)
    assert lines(caplog)[-1]["route"] == "/fhir/metadata"


async def test_a_database_outage_is_one_line_down_and_one_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = EmbeddedDatabase(tmp_path / "db")
    uri = await asyncio.to_thread(db.start)
    port = db.port
    try:
        async with running_app(make_settings(uri, db_timeout_ms=500)) as client:
            assert (
                await client.put("Patient/up", json=patient(id="up"), headers=FHIR_JSON)
            ).status_code == 201
            await asyncio.to_thread(db.stop)
            caplog.clear()
            with caplog.at_level(logging.INFO):
                for _ in range(3):
                    assert (await client.get("Patient/up")).status_code == 503
                db = EmbeddedDatabase(tmp_path / "db", port=port)
                await asyncio.to_thread(db.start)
                for _ in range(50):
                    if (await client.get("Patient/up")).status_code == 200:
                        break
                    await asyncio.sleep(0.2)
                assert (await client.get("Patient/up")).status_code == 200
            state = [r for r in caplog.records if r.name == "fhir_server.db"]
            messages = [r.getMessage() for r in state]
            assert [m.split(" (")[0].split(" after")[0] for m in messages] == [
                "database unavailable",
                "database available again",
            ], messages
            assert all(r.exc_info is None for r in caplog.records if r.name.startswith("fhir"))
            assert [x["status"] for x in lines(caplog)][:3] == [503, 503, 503]
    finally:
        await asyncio.to_thread(db.stop)
