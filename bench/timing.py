"""Timing as a leak: a proxy reading a hidden record vs reading an id that does not exist.

    python -m bench.timing [--samples 400]

Starts a database (SecantusDB in memory, or MONGODB_URI) and a real `fhir-server serve`
process with tokens required and the seed population. The sponsor (James, DS Logon Premium,
parent of the adolescent) signs in through the real login and consent pages; his token then
reads, alternately and in random order within each pair, the adolescent's labelled
Observation (hidden from him) and a random id that was never stored. Both must answer the
same 404 (same body once the id is taken out); the report gives median and p95 of each and
their difference, to document that the two cannot be told apart by time (both are one
indexed `find_one` that matches nothing: the policy is part of the query, not a second step).
The raw driver then does the database's share alone (a `find_one` by `_id` whose condition
rejects the stored document, against an absent `_id`), so what the database itself adds to a
hidden read shows beside the HTTP figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from bench.crud import benchmark_database, start_server

HIDDEN = "obs-sophia-chlamydia-naat"  # seed_data/logins.json fixtures: adolescent-sti-observation


async def sponsor_token(origin: str) -> str:
    """James's token through the real authorization pages (the tests' form helpers)."""
    from tests.integration.auth.conftest import authorize, exchange

    async with httpx.AsyncClient(base_url=origin, timeout=60) as browser:
        auth = await authorize(
            browser, "sponsor", "openid fhirUser user/*.rs", aud=f"{origin}/fhir"
        )
        r = await exchange(browser, auth)
        r.raise_for_status()
        return str(r.json()["access_token"])


def p95(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=20)[-1]


async def bench(uri: str, samples: int, workdir: Path) -> None:
    database = f"bench_{uuid.uuid4().hex[:8]}"
    env = {"AUTH_REQUIRED": "1", "AUTO_SEED": "1"}
    proc, base = start_server(uri, database, workdir / "server.log", env)
    raw: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    times: dict[str, list[float]] = {"hidden": [], "missing": []}
    try:
        assert await raw[database].resources.find_one({"_id": f"Observation/{HIDDEN}"})
        token = await sponsor_token(base.removesuffix("/fhir"))
        async with httpx.AsyncClient(
            base_url=base, timeout=60, headers={"Authorization": f"Bearer {token}"}
        ) as http:

            async def read(kind: str, rid: str) -> str:
                start = time.perf_counter()
                r = await http.get(f"/Observation/{rid}")
                times[kind].append(time.perf_counter() - start)
                assert r.status_code == 404, (kind, r.status_code, r.text)
                return r.text.replace(rid, "<id>")

            # Same length as the hidden id, so the URL and the key compare alike.
            def missing_id() -> str:
                return "obs-" + uuid.uuid4().hex[: len(HIDDEN) - 4]

            bodies = {await read("hidden", HIDDEN), await read("missing", missing_id())}
            assert len(bodies) == 1, bodies  # the same answer, word for word
            for t in times.values():
                t.clear()  # the first two were warm-up
            for _ in range(samples):
                pair = [("hidden", HIDDEN), ("missing", missing_id())]
                random.shuffle(pair)
                for kind, rid in pair:
                    await read(kind, rid)
        # The database alone doing the same kind of work: a find_one by _id whose extra
        # condition rejects the stored document, against one by an _id that is absent.
        col = raw[database].resources
        for _ in range(samples):
            pair = [("raw hidden", HIDDEN), ("raw missing", missing_id())]
            random.shuffle(pair)
            for kind, rid in pair:
                start = time.perf_counter()
                doc = await col.find_one({"_id": f"Observation/{rid}", "comp": "Patient/none"})
                times.setdefault(kind, []).append(time.perf_counter() - start)
                assert doc is None
    finally:
        await raw.drop_database(database)
        await raw.close()
        proc.terminate()
        proc.wait(timeout=30)

    where = "MONGODB_URI" if os.environ.get("MONGODB_URI") else "SecantusDB (embedded)"
    print(f"samples={samples} per kind (alternating pairs, random order), database={where}")
    print("sponsor's token, GET Observation/<id>: both answer the same 404 body")
    print(f"{'read':<34}{'median ms':>10}{'p95 ms':>10}")
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    q95 = {k: p95(v) * 1000 for k, v in times.items()}
    print(f"{'hidden (adolescent, labelled)':<34}{med['hidden']:>10.2f}{q95['hidden']:>10.2f}")
    print(f"{'missing (random id)':<34}{med['missing']:>10.2f}{q95['missing']:>10.2f}")
    print(
        f"{'difference (hidden - missing)':<34}{med['hidden'] - med['missing']:>10.2f}"
        f"{q95['hidden'] - q95['missing']:>10.2f}"
    )
    # Paired differences: each hidden read against the missing read of the same pair.
    diffs = [(h - m) * 1000 for h, m in zip(times["hidden"], times["missing"], strict=True)]
    print(f"median of paired differences: {statistics.median(diffs):.2f} ms")
    rh, rm = times["raw hidden"], times["raw missing"]
    print(
        f"raw driver, find_one rejecting a stored doc vs an absent _id: median "
        f"{statistics.median(rh) * 1000:.2f} vs {statistics.median(rm) * 1000:.2f} ms, "
        f"p95 {p95(rh) * 1000:.2f} vs {p95(rm) * 1000:.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=400)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, benchmark_database(Path(tmp)) as (uri, _):
        asyncio.run(bench(uri, args.samples, Path(tmp)))


if __name__ == "__main__":
    main()
