"""`$export`'s progress names and counts only the types the caller may see (issue 17).

The progress the running job reports (`X-Progress` of the status endpoint) is captured at
its source, `JobStore.heartbeat`, so no poll can miss it; the export itself runs for real.
https://hl7.org/fhir/uv/bulkdata/export.html#response---in-progress-status
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from fhir_server.exchange.bulk_store import JobStore
from tests.integration.access.test_smart_enforcement import Server
from tests.integration.seeded import seeded_server

PROGRESS = re.compile(r"^(\w+) \((\d+) of (\d+) types\)")


@pytest.fixture(scope="module")
async def server(mongo_uri: str) -> AsyncIterator[Server]:
    async with seeded_server(mongo_uri) as (_, http):
        yield Server(http)


async def _export(s: Server, token: str) -> set[str]:
    auth = {"Authorization": f"Bearer {token}"}
    r = await s.http.get("/fhir/$export", headers={**auth, "Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    location = r.headers["content-location"]
    for _ in range(2400):
        r = await s.http.get(location, headers=auth)
        if r.status_code != 202:
            break
        assert len(r.headers["x-progress"]) <= 100
        await asyncio.sleep(0.05)
    assert r.status_code == 200, r.text
    types: set[str] = set()
    for item in r.json()["output"]:
        f = await s.http.get(item["url"], headers=auth)
        types |= {orjson.loads(line)["resourceType"] for line in f.content.splitlines()}
    return types


async def test_progress_counts_only_visible_types(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    original = JobStore.heartbeat

    async def recording(self: JobStore, *args: Any) -> bool:
        seen.append(str(args[-1]))
        return await original(self, *args)

    monkeypatch.setattr(JobStore, "heartbeat", recording)
    token = await server.token("adult-dependent-no-grant", "openid fhirUser user/*.rs")
    exported = await _export(server, token)
    assert exported, "an adult dependent exports her own record"
    steps = [m.groups() for p in seen if (m := PROGRESS.match(p))]
    assert steps, seen
    named = {rt for rt, _, _ in steps}
    totals = {int(n) for _, _, n in steps}
    assert named <= exported, (named, exported)
    assert totals == {len(exported)}, (totals, exported)
