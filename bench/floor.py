"""The framework floor: the cheapest requests, server against server, in alternating rounds.

    python -m bench.floor [--n 400] [--rounds 5] [--concurrency 16] [--compare DIR]
                          [--access-log]

Starts a database (SecantusDB in memory, or MONGODB_URI) and real `fhir-server serve`
processes on it with AUTH_REQUIRED=0 (no token, no audit): what is left is uvicorn, the
middlewares, the route and the pipeline. Each round sends `n` `GET /fhir/metadata` (no
database work at all) and `n` `GET /fhir/Patient/<id>` (one `find_one`) to each server in
turn, so drift on a shared machine hits them all, and the raw driver runs the same
`find_one`s in the same round. Reported per server (median of rounds): requests/s, the
server's CPU time per request (user + system from /proc: steadier than rates when other
work shares the machine), and the ratios against the first server and against the raw
driver.

Servers: this checkout as configured by default (uvicorn access log off); `--access-log`
adds this checkout with `ACCESS_LOG=1`; `--compare DIR` adds the server of another checkout
(PYTHONPATH=DIR), e.g. an export of `main`, to compare versions.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from bench.crud import benchmark_database, cpu_seconds, patient, run_pool, start_server


@dataclass
class Server:
    label: str
    env: dict[str, str]
    proc: Any = None
    base: str = ""
    rates: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)


async def _measure(server: Server, kind: str, path: Any, n: int, concurrency: int) -> None:
    # Fresh connections each time: uvicorn closes those idle past its keep-alive (5 s)
    # while the other servers are measured.
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:

        async def one(i: int) -> None:
            r = await http.get(f"{server.base}{path(i)}")
            assert r.status_code == 200, r.text

        await run_pool(concurrency, concurrency, one)  # open the connections
        cpu0 = cpu_seconds(server.proc.pid)
        rate = await run_pool(n, concurrency, one)
    server.rates.setdefault(kind, []).append(rate)
    server.cpu.setdefault(kind, []).append((cpu_seconds(server.proc.pid) - cpu0) / n)


async def bench(args: argparse.Namespace, uri: str, workdir: Path) -> None:
    database = f"bench_{uuid.uuid4().hex[:8]}"
    servers = [Server("this checkout", {})]
    if args.access_log:
        servers.append(Server("this checkout, ACCESS_LOG=1", {"ACCESS_LOG": "1"}))
    if args.compare:
        servers.append(Server(f"PYTHONPATH={args.compare}", {"PYTHONPATH": args.compare}))
    for i, s in enumerate(servers):
        s.proc, s.base = start_server(uri, database, workdir / f"server{i}.log", s.env)
    raw: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    coll = raw[database].resources
    raw_rates: list[float] = []
    try:
        async with httpx.AsyncClient(timeout=60) as http:
            created = await http.post(
                f"{servers[0].base}/Patient",
                json=patient(1),
                headers={"Content-Type": "application/fhir+json"},
            )
            assert created.status_code == 201, created.text
            pid = created.json()["id"]
            for s in servers:  # warm up every path once
                for _ in range(50):
                    await http.get(f"{s.base}/metadata")
                    await http.get(f"{s.base}/Patient/{pid}")
        for _ in range(args.rounds):
            for s in servers:
                await _measure(s, "metadata", lambda i: "/metadata", args.n, args.concurrency)
                await _measure(s, "read", lambda i: f"/Patient/{pid}", args.n, args.concurrency)

            async def raw_find(i: int) -> None:
                assert await coll.find_one({"_id": f"Patient/{pid}"}) is not None

            raw_rates.append(await run_pool(args.n, args.concurrency, raw_find))
    except Exception:
        for i, s in enumerate(servers):  # what the servers said, before the files go
            print(f"--- {s.label}", (workdir / f"server{i}.log").read_text()[-3000:])
        raise
    finally:
        await raw.drop_database(database)
        await raw.close()
        for s in servers:
            s.proc.terminate()
            s.proc.wait(timeout=30)

    raw_rate = statistics.median(raw_rates)
    first = servers[0]
    print(f"n={args.n} rounds={args.rounds} concurrency={args.concurrency}; medians of rounds")
    print(f"raw find_one: {raw_rate:.0f}/s")
    head = f"{'server':<44}{'request':<10}{'req/s':>8}{'vs raw':>8}{'CPU/req':>10}{'CPU ratio':>10}"
    print(head)
    for s in servers:
        for kind in ("metadata", "read"):
            rate = statistics.median(s.rates[kind])
            cpu = statistics.median(s.cpu[kind])
            base_cpu = statistics.median(first.cpu[kind])
            vs_raw = f"{rate / raw_rate:.2f}" if kind == "read" else "-"
            print(
                f"{s.label:<44}{kind:<10}{rate:>8.0f}{vs_raw:>8}"
                f"{cpu * 1e6:>8.0f}us{cpu / base_cpu:>10.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--compare", default="", help="another checkout's directory")
    parser.add_argument("--access-log", action="store_true", help="add ACCESS_LOG=1")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, benchmark_database(Path(tmp)) as (uri, _):
        asyncio.run(bench(args, uri, Path(tmp)))


if __name__ == "__main__":
    main()
