"""The token cache's effect on reads: GET Patient/<id> with a token, cache on vs off.

    python -m bench.token_cache [--n 300] [--rounds 6] [--concurrency 4] [--audit]

Starts a database (SecantusDB in memory, or MONGODB_URI), seeds it, and runs two real
`fhir-server serve` processes on it with tokens required: one with the token cache (the
default), one with AUTH_TOKEN_CACHE_SIZE=0 (every request checks the signature and reads
the token record). Auditing is off on both (AUDIT=0) unless --audit, so the figure is the
token check's own share. Both use one system token (SMART Backend Services); rounds
alternate between the servers so drift on a shared machine hits both. Then the raw driver's
find_one of the same stored documents, on the same database, for the ratio against it.

Reported: requests/s and the server's CPU per request (median of rounds) each way, the
ratios cache on / off, and each against the raw find_one; then the token check alone
(`smart_auth.verify_access_token`, 2000 times in this process on the same database), wall
and CPU per check, cache on and off.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from bench.audit import Target
from bench.crud import benchmark_database, cpu_seconds, run_pool, start_server


async def reads(t: Target, n: int, concurrency: int, ids: list[str]) -> float:
    async def job(i: int) -> None:
        await t.get(f"/Patient/{ids[i % len(ids)]}")

    return await run_pool(n, concurrency, job)


async def token_checks(uri: str, database: str, n: int) -> dict[str, tuple[float, float]]:
    """Seconds of wall and CPU per `smart_auth.verify_access_token`, cache on and off."""
    import anyio

    import smart_auth
    from fhir_server.config import Settings
    from smart_auth import AuthConfig, AuthServer
    from smart_auth.clients import load_client

    settings = Settings(mongodb_uri=uri, database=database, auto_seed=False)
    out: dict[str, tuple[float, float]] = {}
    for name, size in (("cache on", 10_000), ("cache off", 0)):
        server = AuthServer(settings, AuthConfig.from_settings(settings, token_cache_size=size))
        await anyio.to_thread.run_sync(server.start, uri)
        try:
            client = load_client(server.store, "mhs-bulk-export-service")
            assert client is not None
            issue = partial(
                server.generate_token, "client_credentials", client, scope="system/*.rs"
            )
            body = await anyio.to_thread.run_sync(issue)
            token = body["access_token"]
            for _ in range(20):  # warm up; and the revocation feed read once
                await smart_auth.verify_access_token(server, token)
                await asyncio.sleep(0.02)
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(n):
                await smart_auth.verify_access_token(server, token)
            out[name] = ((time.perf_counter() - wall) / n, (time.process_time() - cpu) / n)
        finally:
            await anyio.to_thread.run_sync(server.close)
    return out


async def bench(
    uri: str, n: int, rounds: int, concurrency: int, audit: bool, workdir: Path
) -> None:
    database = f"bench_{uuid.uuid4().hex[:8]}"
    env = {"AUTH_REQUIRED": "1", "AUTO_SEED": "1", "AUDIT": "1" if audit else "0"}
    on_proc, on_base = start_server(uri, database, workdir / "on.log", env)
    off_proc, off_base = start_server(
        uri, database, workdir / "off.log", {**env, "AUTH_TOKEN_CACHE_SIZE": "0"}
    )
    on, off = Target("cache on", on_proc, on_base), Target("cache off", off_proc, off_base)
    raw: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    coll = raw[database].resources
    raw_rates: list[float] = []
    try:
        for t in (on, off):
            await t.login()
        bundle = (await off.get("/Patient", _count="100")).json()
        ids = [e["resource"]["id"] for e in bundle.get("entry", [])]
        assert ids, "the seed has no Patients"
        stored = [d["_id"] async for d in coll.find({"rt": "Patient"}, {"_id": 1}).limit(100)]

        async def raw_find(i: int) -> None:
            assert await coll.find_one({"_id": stored[i % len(stored)]}) is not None

        for t in (on, off):  # warm up: connection pools, the first verification
            await reads(t, 40, concurrency, ids)
        for r in range(rounds):
            for t in (on, off) if r % 2 == 0 else (off, on):
                cpu0 = cpu_seconds(t.proc.pid)
                t.rates.append(await reads(t, n, concurrency, ids))
                t.cpu.append((cpu_seconds(t.proc.pid) - cpu0) / n)
            raw_rates.append(await run_pool(n, concurrency, raw_find))
        checks = await token_checks(uri, database, 2000)
    finally:
        for t in (on, off):
            await t.http.aclose()
            if t.proc.poll() is None:
                t.proc.terminate()
                t.proc.wait(timeout=30)
        await raw.drop_database(database)
        await raw.close()

    where = "MONGODB_URI" if os.environ.get("MONGODB_URI") else "SecantusDB (embedded)"
    print(
        f"n={n} per round, rounds={rounds}, concurrency={concurrency}, database={where}, "
        f"audit={'on' if audit else 'off'}; GET Patient/<id> with a system token"
    )
    raw_rate = statistics.median(raw_rates)
    print(f"{'server':<12}{'req/s':>8}{'vs raw find_one':>17}{'server CPU ms/req':>19}   rounds")
    for t in (on, off):
        rate = statistics.median(t.rates)
        cpu = statistics.median(t.cpu) * 1000
        per_round = ", ".join(f"{x:.0f}" for x in t.rates)
        print(f"{t.name:<12}{rate:>8.0f}{rate / raw_rate:>16.2f}x{cpu:>19.2f}   {per_round}")
    print(f"{'raw find_one':<12}{raw_rate:>8.0f}")
    rate_ratio = statistics.median(on.rates) / statistics.median(off.rates)
    cpu_ratio = statistics.median(off.cpu) / statistics.median(on.cpu)
    print(f"ratio cache on / off: {rate_ratio:.2f} by requests/s")
    print(f"ratio cache on / off: {cpu_ratio:.2f} by server CPU per request (off / on)")
    print("the token check alone, in one process on the same database (2000 checks each):")
    for name, (wall, cpu) in checks.items():
        print(f"  {name:<10}{wall * 1e6:>9.0f} us wall{cpu * 1e6:>9.0f} us CPU per check")
    (on_wall, on_cpu), (off_wall, off_cpu) = checks["cache on"], checks["cache off"]
    print(f"  ratio cache off / on: {off_wall / on_wall:.0f}x wall, {off_cpu / on_cpu:.0f}x CPU")
    bad = on.failed + off.failed
    if bad:
        print(f"answers other than 200 (overload): {on.failed} cache on, {off.failed} off")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--audit", action="store_true", help="audit on (default: AUDIT=0)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, benchmark_database(Path(tmp)) as (uri, _):
        asyncio.run(bench(uri, args.n, args.rounds, args.concurrency, args.audit, Path(tmp)))


if __name__ == "__main__":
    main()
