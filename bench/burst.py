"""Reproducing the hang of issue 10: a burst of `ne` date searches beside normal traffic.

    python -m bench.burst [--events 3000] [--rate 80] [--seconds 60] [--server-path DIR]

Starts a database (SecantusDB in memory, or MONGODB_URI) and one `fhir-server serve` process
on 127.0.0.1 with tokens required, auditing on and the seed population; fills the log with
`--events` AuditEvents (token-less requests: each answers 401 and is audited); then, for
`--seconds`, fires `ne`-prefixed date searches on AuditEvent and Observation at `--rate`
per second, open loop (a fuzzer does not wait for answers), while a probe reads one
Observation twice a second. Afterwards it keeps probing until a read answers in under a
second (recovery), then sends SIGTERM and times the stop.

Reported: answers by status for the burst and the probe, the probe's p50/p99 during the
burst, the time to recover, the AuditEvents written, and how long SIGTERM took.
`--server-path` runs the server from another checkout (PYTHONPATH), to compare versions.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import statistics
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from bench.audit import system_token
from bench.crud import benchmark_database, start_server

PROBE_EVERY_S = 0.5


async def fill_log(base: str, events: int) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        todo = iter(range(events))

        async def worker() -> None:
            for _ in todo:
                await http.get("/Patient")

        await asyncio.gather(*(worker() for _ in range(8)))


async def run(args: argparse.Namespace, uri: str, workdir: Path) -> None:
    database = f"burst_{uuid.uuid4().hex[:8]}"
    env = {"AUTH_REQUIRED": "1", "AUTO_SEED": "1"}
    if args.server_path:
        env["PYTHONPATH"] = args.server_path
    proc, base = start_server(uri, database, workdir / "server.log", env)
    origin = base.removesuffix("/fhir")
    raw: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    burst: Counter[int | str] = Counter()
    probe: Counter[int | str] = Counter()
    during: list[float] = []
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=100)
    try:
        async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:
            http.headers["Authorization"] = f"Bearer {await system_token(http, origin)}"
            obs = (await http.get("/Observation", params={"_count": "1"})).json()
            obs_id = obs["entry"][0]["resource"]["id"]
            await fill_log(base, args.events)
            log = await raw[database].audit.count_documents({"rt": "AuditEvent"})
            print(f"AuditEvents before the burst: {log}", flush=True)

            async def fuzz() -> None:
                rt = random.choice(("AuditEvent", "Observation"))
                day = f"20{random.randint(10, 26)}-{random.randint(1, 12):02d}-01"
                try:
                    r = await http.get(f"/{rt}", params={"date": f"ne{day}"})
                    burst[r.status_code] += 1
                except httpx.HTTPError as exc:
                    burst[type(exc).__name__] += 1

            async def read() -> float:
                start = time.perf_counter()
                try:
                    r = await http.get(f"/Observation/{obs_id}", timeout=30)
                    probe[r.status_code] += 1
                except httpx.HTTPError as exc:
                    probe[type(exc).__name__] += 1
                return time.perf_counter() - start

            async def probing(until: float) -> None:
                while time.monotonic() < until:
                    during.append(await read())
                    await asyncio.sleep(PROBE_EVERY_S)

            end = time.monotonic() + args.seconds
            prober = asyncio.create_task(probing(end))
            tasks = []
            while time.monotonic() < end:
                tasks.append(asyncio.create_task(fuzz()))
                await asyncio.sleep(1 / args.rate)
            await prober
            burst_end = time.monotonic()
            print(f"burst done: {len(tasks)} sent, {dict(burst)}; probe {dict(probe)}", flush=True)
            recovered = None
            while time.monotonic() - burst_end < 600:
                if await read() < 1.0 and probe[200]:
                    recovered = time.monotonic() - burst_end
                    break
                await asyncio.sleep(PROBE_EVERY_S)
            unanswered = sum(not t.done() for t in tasks)
            print(f"recovered after {recovered} s; unanswered {unanswered}", flush=True)
            log_after = await raw[database].audit.count_documents({"rt": "AuditEvent"})
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                code: int | str = proc.wait(timeout=120)
            except Exception:
                code = "still running after 120 s"
            stop_s = time.monotonic() - started
            print(f"SIGTERM: exit {code} after {stop_s:.1f} s", flush=True)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        try:
            await raw.drop_database(database)
        except PyMongoError as exc:  # a database still saturated: it is dropped with the run
            print(f"dropping the database failed: {type(exc).__name__}")
        await raw.close()

    q = statistics.quantiles(during, n=100, method="inclusive") if len(during) > 1 else during
    print(
        f"burst: {len(tasks)} `ne` date searches at {args.rate}/s for {args.seconds} s: {dict(burst)}"
    )
    print(f"still unanswered when the probe recovered: {unanswered}")
    print(
        f"probe reads during the burst: {dict(probe)}, p50 {statistics.median(during) * 1000:.0f} ms, "
        f"p99 {q[-1] * 1000:.0f} ms"
    )
    rec = f"{recovered:.1f} s" if recovered is not None else "not within 600 s"
    print(f"recovered (a read under 1 s) {rec} after the burst; AuditEvents now {log_after}")
    print(f"SIGTERM: exit {code} after {stop_s:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=80.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--server-path", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, benchmark_database(Path(tmp)) as (uri, _):
        asyncio.run(run(args, uri, Path(tmp)))


if __name__ == "__main__":
    main()
