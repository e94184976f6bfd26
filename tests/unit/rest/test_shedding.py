"""Load shedding as ASGI middleware: at most `limit` requests in flight, the next one answers
503 with Retry-After and an OperationOutcome at once; a full downstream backlog refuses all."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from fhir_server.rest.shedding import LoadShedding


class Gate:
    """An inner app whose requests wait until the test opens the gate."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.all_in = asyncio.Event()
        self.expected = 0
        self.entered = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.entered += 1
        if self.entered == self.expected:
            self.all_in.set()
        await self.open.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_over_the_limit_answers_503_at_once_then_recovers() -> None:
    gate = Gate()
    gate.expected = 3
    shed = LoadShedding(gate, limit=3, retry_after_s=7)
    async with client(shed) as http:
        held = [asyncio.create_task(http.get("/fhir/Patient")) for _ in range(3)]
        await asyncio.wait_for(gate.all_in.wait(), 5)
        over = await asyncio.wait_for(http.get("/fhir/Patient"), 2)
        assert over.status_code == 503
        assert over.headers["retry-after"] == "7"
        assert over.headers["content-type"].startswith("application/fhir+json")
        body = over.json()
        assert body["resourceType"] == "OperationOutcome"
        assert body["issue"][0]["code"] == "transient"
        assert shed.in_flight == 3 and shed.shed == 1
        gate.open.set()
        assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200, 200]
        assert shed.in_flight == 0
        assert (await http.get("/fhir/Patient")).status_code == 200


async def test_a_full_backlog_refuses_everything() -> None:
    gate = Gate()
    gate.open.set()
    full = True
    shed = LoadShedding(gate, limit=10, saturated=lambda: full)
    async with client(shed) as http:
        r = await http.post("/auth/token", data={"grant_type": "password"})
        assert r.status_code == 503 and "audit" in r.json()["issue"][0]["diagnostics"]
        full = False
        assert (await http.get("/fhir/metadata")).status_code == 200
    assert gate.entered == 1


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        LoadShedding(Gate(), limit=0)
