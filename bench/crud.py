"""Reads and creates through HTTP beside the raw driver on the same database, as ratios.

    python -m bench.crud [--n 500] [--concurrency 4]

Starts a database (SecantusDB in memory, or MONGODB_URI) and a real `fhir-server serve`
process on it, then in one run measures:

- creates/s: POST /fhir/Patient  vs  the raw driver's insert_one of the same stored documents
- reads/s:   GET /fhir/Patient/id vs  the raw driver's find_one by _id
- the server's CPU time per request (user + system, read from /proc for its process)

The database's own speed cancels out of the ratios; the absolute rates depend on the machine.
The server runs with AUTH_REQUIRED=0, so token verification is not part of these figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from fhir_server.db.embedded import EmbeddedDatabase, free_port

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def patient(i: int) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "active": True,
        "gender": "female" if i % 2 else "male",
        "birthDate": f"19{50 + i % 50}-0{1 + i % 9}-1{i % 10}",
        "name": [{"family": f"Bench{i}", "given": ["Ada", "B."]}],
        "identifier": [
            {"system": "http://mhs.example.org/fhir/sid/edipi", "value": f"{1000000000 + i}"}
        ],
        "telecom": [{"system": "phone", "value": f"555-01{i % 100:02d}"}],
        "address": [
            {"line": [f"{i} Main St"], "city": "Fort Example", "state": "VA", "postalCode": "22060"}
        ],
    }


async def run_pool(n: int, concurrency: int, job: Any) -> float:
    """Run job(i) for i in range(n) with `concurrency` workers; returns operations per second."""
    queue = iter(range(n))

    async def worker() -> None:
        for i in queue:
            await job(i)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - start)


@contextmanager
def benchmark_database(tmp: Path) -> Iterator[tuple[str, int | None]]:
    """`MONGODB_URI` if set, else an in-memory SecantusDB for the run: its URI and, for
    the embedded one, its process id (to charge its CPU too)."""
    uri = os.environ.get("MONGODB_URI")
    if uri:
        yield uri, None
        return
    embedded = EmbeddedDatabase(tmp / "db", memory=True)
    uri = embedded.start()
    try:
        proc = getattr(embedded, "_proc", None)
        yield uri, proc.pid if proc is not None else None
    finally:
        embedded.stop()


def start_server(
    uri: str, database: str, log: Path, extra_env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    # AUTH_REQUIRED=0: this measures the REST core without SMART token verification
    # (bench/audit.py turns tokens and seeding on through extra_env).
    env = {
        **os.environ,
        "AUTH_REQUIRED": "0",
        "MONGODB_URI": uri,
        "MONGODB_DATABASE": database,
        "AUTO_SEED": "0",
        "PORT": str(port),
        **(extra_env or {}),
    }
    script = str(Path(sys.executable).parent / "fhir-server")
    with log.open("wb") as out:
        proc = subprocess.Popen([script, "serve"], env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/fhir"
    for _ in range(300):
        try:
            if httpx.get(f"{base}/metadata", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"server did not start; see {log}")


async def bench(uri: str, n: int, concurrency: int, workdir: Path) -> None:
    database = f"bench_{uuid.uuid4().hex[:8]}"
    proc, base = start_server(uri, database, workdir / "server.log")
    raw: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, w="majority")
    coll = raw[database].resources
    try:
        async with httpx.AsyncClient(
            base_url=base, timeout=60, headers={"Content-Type": "application/fhir+json"}
        ) as http:
            for i in range(20):  # warm up both paths
                await http.post("/Patient", json=patient(i))
            ids: list[str] = []

            async def create(i: int) -> None:
                r = await http.post(
                    "/Patient", json=patient(i), headers={"Prefer": "return=minimal"}
                )
                assert r.status_code == 201, r.text
                ids.append(r.headers["location"].split("/")[-3])

            cpu0 = cpu_seconds(proc.pid)
            http_creates = await run_pool(n, concurrency, create)
            cpu_create = (cpu_seconds(proc.pid) - cpu0) / n

            async def read(i: int) -> None:
                r = await http.get(f"/Patient/{ids[i % len(ids)]}")
                assert r.status_code == 200

            cpu0 = cpu_seconds(proc.pid)
            http_reads = await run_pool(n, concurrency, read)
            cpu_read = (cpu_seconds(proc.pid) - cpu0) / n

        # The raw driver on the very documents the server stored.
        stored = [d async for d in coll.find({"rt": "Patient"}, limit=n)]
        copies = []
        for d in stored:
            d = dict(d)
            d["_id"] = f"Patient/raw-{uuid.uuid4().hex}"
            copies.append(d)

        async def raw_insert(i: int) -> None:
            await coll.insert_one(copies[i % len(copies)] | {"_id": f"{copies[0]['_id']}-{i}"})

        raw_inserts = await run_pool(n, concurrency, raw_insert)

        async def raw_find(i: int) -> None:
            doc = await coll.find_one({"_id": stored[i % len(stored)]["_id"]})
            assert doc is not None

        raw_finds = await run_pool(n, concurrency, raw_find)
    finally:
        await raw.drop_database(database)
        await raw.close()
        proc.terminate()
        proc.wait(timeout=30)

    print(
        f"n={n} concurrency={concurrency} database={'MONGODB_URI' if os.environ.get('MONGODB_URI') else 'SecantusDB (embedded)'}"
    )
    print(f"{'operation':<28}{'server/s':>10}{'raw/s':>10}{'ratio':>8}{'server CPU/req':>16}")
    print(
        f"{'create (POST vs insert_one)':<28}{http_creates:>10.0f}{raw_inserts:>10.0f}"
        f"{http_creates / raw_inserts:>8.2f}{cpu_create * 1000:>13.2f} ms"
    )
    print(
        f"{'read (GET vs find_one)':<28}{http_reads:>10.0f}{raw_finds:>10.0f}"
        f"{http_reads / raw_finds:>8.2f}{cpu_read * 1000:>13.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, benchmark_database(Path(tmp)) as (uri, _):
        asyncio.run(bench(uri, args.n, args.concurrency, Path(tmp)))


if __name__ == "__main__":
    main()
