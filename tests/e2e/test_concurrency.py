"""Optimistic concurrency under truly parallel requests, across two server processes.

Two `fhir-server` processes share one database (as behind a load balancer) and threads hit
both at once: exactly one If-Match update from a version wins, and unconditioned updates
all land as distinct versions (no lost update, no duplicate version number).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from threading import Barrier

import httpx

from tests.e2e.conftest import shared_db_env

N = 12
JSON = {"Content-Type": "application/fhir+json"}


def test_parallel_if_match_exactly_one_wins(live_server, mongo_uri):
    env = shared_db_env(mongo_uri)
    a, b = live_server(**env), live_server(**env)
    r = httpx.put(
        f"{a.base}/Patient/race", json={"resourceType": "Patient", "id": "race"}, headers=JSON
    )
    assert r.status_code == 201
    barrier = Barrier(N)

    def attempt(i: int) -> int:
        base = (a, b)[i % 2].base
        body = {
            "resourceType": "Patient",
            "id": "race",
            "gender": "female" if i % 2 else "male",
            "name": [{"family": f"Writer{i}"}],
        }
        barrier.wait()
        return httpx.put(
            f"{base}/Patient/race", json=body, timeout=60, headers={**JSON, "If-Match": 'W/"1"'}
        ).status_code

    with ThreadPoolExecutor(N) as pool:
        statuses = sorted(pool.map(attempt, range(N)))
    assert statuses.count(200) == 1, statuses
    assert statuses.count(412) == N - 1, statuses
    hist = httpx.get(f"{a.base}/Patient/race/_history").json()
    assert [e["resource"]["meta"]["versionId"] for e in hist["entry"]] == ["2", "1"]


def test_parallel_updates_without_if_match_lose_nothing(live_server, mongo_uri):
    env = shared_db_env(mongo_uri)
    a, b = live_server(**env), live_server(**env)
    httpx.put(
        f"{a.base}/Patient/pile", json={"resourceType": "Patient", "id": "pile"}, headers=JSON
    )
    barrier = Barrier(N)

    def attempt(i: int) -> int:
        base = (a, b)[i % 2].base
        body = {"resourceType": "Patient", "id": "pile", "name": [{"family": f"Writer{i}"}]}
        barrier.wait()
        return httpx.put(f"{base}/Patient/pile", json=body, headers=JSON, timeout=60).status_code

    with ThreadPoolExecutor(N) as pool:
        statuses = list(pool.map(attempt, range(N)))
    assert statuses == [200] * N
    hist = httpx.get(f"{b.base}/Patient/pile/_history", params={"_count": "100"}).json()
    versions = [int(e["resource"]["meta"]["versionId"]) for e in hist["entry"]]
    assert sorted(versions) == list(range(1, N + 2))
    writers = {e["resource"]["name"][0]["family"] for e in hist["entry"] if "name" in e["resource"]}
    assert writers == {f"Writer{i}" for i in range(N)}
