"""Reads and many-row searches with real tokens, beside the raw driver on the same documents.

    python -m bench.reads [--n 300] [--rounds 3] [--concurrency 8] [--copies 20] [--audit]
                          [--server-path DIR]

Starts a database (SecantusDB in memory, or MONGODB_URI) and one `fhir-server serve` on it
with tokens required and the seed population (AUTH_REQUIRED=1, AUTO_SEED=1; AUDIT=0 unless
`--audit`, so the figures are the read path's). Two tokens: the backend service's
(`system/*.rs`, no post-check work) and the sponsor's (`user/*.cruds` through the real
login pages: a proxy of a child and of an adolescent, whose post-check tests labels and
messages). Rounds alternate server and raw driver:

- `GET Patient/<id>` over the seed Patients the token may read  vs  `find_one({_id})` of
  the same documents (requests/s);
- `GET Observation?_count=200` (a page of 200 rows; the seed's Observations are copied
  `--copies` times in the server's own stored shape, so every token has pages of many rows)
  vs `find` of the same stored documents by `_id` (rows/s).

Reported: medians over rounds, the ratios, and the server's and the database's CPU per
request (steadier than rates on a shared machine). `--server-path` runs the server from
another checkout (PYTHONPATH), to compare versions in one way of measuring.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from bench.audit import system_token
from bench.crud import benchmark_database, cpu_seconds, run_pool, start_server
from bench.soak import user_token


class Figures:
    def __init__(self) -> None:
        self.rates: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}

    def add(self, name: str, rate: float, cpu_ms: float | None = None) -> None:
        self.rates.setdefault(name, []).append(rate)
        if cpu_ms is not None:
            self.cpu.setdefault(name, []).append(cpu_ms)

    def rate(self, name: str) -> float:
        return statistics.median(self.rates[name])


async def measure(
    fig: Figures,
    name: str,
    n: int,
    concurrency: int,
    job: Any,
    pids: tuple[int | None, int | None],
    units: int = 1,
) -> None:
    """`job(i)` n times; `units` rows per job (for rows/s)."""
    server, db = pids
    s0 = cpu_seconds(server) if server else 0.0
    d0 = cpu_seconds(db) if db else 0.0
    start = time.perf_counter()
    await run_pool(n, concurrency, job)
    elapsed = time.perf_counter() - start
    fig.add(name, n * units / elapsed)
    if server:
        fig.add(f"{name} server", 0, (cpu_seconds(server) - s0) / n * 1000)
    if db:
        fig.add(f"{name} db", 0, (cpu_seconds(db) - d0) / n * 1000)


async def _settled(http: httpx.AsyncClient, url: str, params: dict[str, str]) -> httpx.Response:
    """A setup request, retried while a busy machine answers 503 (past the time budget)."""
    for _ in range(10):
        r = await http.get(url, params=params)
        if r.status_code != 503:
            break
        await asyncio.sleep(2)
    r.raise_for_status()
    return r


async def _copies(col: Any, copies: int) -> None:
    """`copies` more of each stored Observation, as the server stored it (same compartments,
    index entries and access fields), under new ids: pages of many rows for every token."""
    docs = [d async for d in col.find({"rt": "Observation"})]
    batch = []
    for n in range(copies):
        for d in docs:
            rid = f"{d['id']}-copy{n}"
            batch.append(
                {**d, "_id": f"Observation/{rid}", "id": rid, "res": {**d["res"], "id": rid}}
            )
    if batch:
        await col.insert_many(batch)


async def bench(args: argparse.Namespace, uri: str, db_pid: int | None, workdir: Path) -> None:
    database = f"bench_{uuid.uuid4().hex[:8]}"
    env = {"AUTH_REQUIRED": "1", "AUTO_SEED": "1", "AUDIT": "1" if args.audit else "0"}
    if args.server_path:
        env["PYTHONPATH"] = args.server_path
    proc, base = start_server(uri, database, workdir / "server.log", env)
    origin = base.removesuffix("/fhir")
    raw: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    col = raw[database].resources
    fig = Figures()
    pids = (proc.pid, db_pid)
    try:
        async with (
            httpx.AsyncClient(base_url=base, timeout=120) as system,
            httpx.AsyncClient(base_url=base, timeout=120) as user,
        ):
            system.headers["Authorization"] = f"Bearer {await system_token(system, origin)}"
            user.headers["Authorization"] = f"Bearer {await user_token(origin)}"
            clients = {"system": system, "sponsor": user}
            failed = 0

            def overloaded(r: httpx.Response) -> bool:
                """A 503 past the time budget on a busy machine; never a wrong answer."""
                nonlocal failed
                if r.status_code == 200:
                    return False
                assert r.status_code in (503, 504), r.text
                failed += 1
                return True

            await _copies(col, args.copies)
            readable: dict[str, list[str]] = {}
            rows: dict[str, list[str]] = {}
            for who, http in clients.items():
                r = await _settled(http, "/Patient", {"_count": "200", "_elements": "id"})
                readable[who] = [e["resource"]["id"] for e in r.json().get("entry", [])]
                r = await _settled(http, "/Observation", {"_count": "200"})
                rows[who] = [e["fullUrl"].split("/fhir/", 1)[1] for e in r.json()["entry"]]
                assert readable[who] and rows[who], who

            def read(who: str) -> Any:
                http, pats = clients[who], readable[who]

                async def job(i: int) -> None:
                    r = await http.get(f"/Patient/{pats[i % len(pats)]}")
                    overloaded(r)

                return job

            def raw_read(who: str) -> Any:
                keys = [f"Patient/{p}" for p in readable[who]]

                async def job(i: int) -> None:
                    assert await col.find_one({"_id": keys[i % len(keys)]}) is not None

                return job

            def search(who: str) -> Any:
                http, want = clients[who], len(rows[who])

                async def job(i: int) -> None:
                    r = await http.get("/Observation", params={"_count": "200"})
                    if not overloaded(r):
                        assert len(r.json()["entry"]) == want, r.text

                return job

            def raw_search(who: str) -> Any:
                keys = rows[who]

                async def job(i: int) -> None:
                    found = [d async for d in col.find({"_id": {"$in": keys}}).sort("_id", 1)]
                    assert len(found) == len(keys)

                return job

            for who in clients:  # warm up
                await run_pool(20, args.concurrency, read(who))
                await run_pool(4, 2, search(who))
            searches = max(4, args.n // 20)
            for _ in range(args.rounds):
                for who in clients:
                    await measure(fig, f"read {who}", args.n, args.concurrency, read(who), pids)
                    await measure(
                        fig, f"raw read {who}", args.n, args.concurrency, raw_read(who), pids
                    )
                    units = len(rows[who])
                    await measure(fig, f"search {who}", searches, 2, search(who), pids, units)
                    await measure(
                        fig, f"raw search {who}", searches, 2, raw_search(who), pids, units
                    )
    finally:
        await raw.drop_database(database)
        await raw.close()
        proc.terminate()
        proc.wait(timeout=60)

    where = "MONGODB_URI" if os.environ.get("MONGODB_URI") else "SecantusDB (embedded, memory)"
    print(
        f"n={args.n} rounds={args.rounds} concurrency={args.concurrency} database={where} "
        f"audit={'on' if args.audit else 'off'} server={args.server_path or 'this checkout'}"
    )
    print(
        f"{'path':<34}{'server':>9}{'raw':>9}{'ratio':>7}"
        f"{'server CPU ms':>15}{'db CPU ms':>11}{'raw db CPU ms':>15}"
    )
    for who in ("system", "sponsor"):
        for kind, unit in (("read", "req/s"), ("search", "rows/s")):
            name, rawname = f"{kind} {who}", f"raw {kind} {who}"
            srv, rw = fig.rate(name), fig.rate(rawname)
            cpu = statistics.median(fig.cpu.get(f"{name} server", [float("nan")]))
            dbc = statistics.median(fig.cpu.get(f"{name} db", [float("nan")]))
            rdb = statistics.median(fig.cpu.get(f"{rawname} db", [float("nan")]))
            label = f"{kind} {who} ({unit})"
            print(
                f"{label:<34}{srv:>9.0f}{rw:>9.0f}{srv / rw:>7.2f}{cpu:>15.2f}{dbc:>11.2f}{rdb:>15.2f}"
            )
    print(
        f"rows per search: system {len(rows['system'])}, sponsor {len(rows['sponsor'])}; "
        f"answers other than 200 (overload): {failed}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--copies", type=int, default=20, help="copies of each Observation")
    parser.add_argument("--audit", action="store_true")
    parser.add_argument("--server-path", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, benchmark_database(Path(tmp)) as (uri, db_pid):
        asyncio.run(bench(args, uri, db_pid, Path(tmp)))


if __name__ == "__main__":
    main()
