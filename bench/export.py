"""`$export` (and `$everything`) alone, beside the raw driver, at 1x and 10x data.

    python -m bench.export [--size 10000] [--runs 2] [--compare DIR] [--everything]

`make bench`'s `$export` rows without the rest of the run: one SecantusDB (standalone, on
disk, as bench/all.py), a `fhir-server serve` with tokens required and auditing on (it
seeds the database; a `system/*.rs` token of the seed's backend-service client), the store
grown with bench/search.py's loader to a tenth of `--size`, then to `--size`. At each size
the export's NDJSON rate (kick-off, status every 0.1 s, every file downloaded) beside a raw
cursor dump of the same types, in alternating runs (bench/all.py, `measure_export`), and the
server's RSS peak during the export. `--compare DIR` runs a second server from another
checkout (`PYTHONPATH=DIR`) on the same database, measured the same way in the same run
(before / after). `--everything` adds `Patient/<id>/$everything` at the largest size.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from bench.all import (
    Bench,
    Row,
    export_memory_row,
    measure_everything,
    measure_export,
    open_server,
    print_table,
)
from bench.search import LoadStats, Population, grow, load_templates, start_secantus
from fhir_server.db.client import ensure_indexes, open_client
from fhir_server.search.extract import compartments, index_entries
from fhir_server.search.indexes import index_models
from fhir_server.search.registry import Registry
from fhir_server.storage.store import ResourceStore

Doc = dict[str, Any]


async def run(args: argparse.Namespace, uri: str, workdir: Path, db_pid: int | None) -> None:
    database = f"bench_{uuid.uuid4().hex[:8]}"
    client: AsyncMongoClient[Doc] = open_client(uri, timeout_ms=30000, socket_timeout_ms=600_000)
    db = client[database]
    registry = Registry.load_default()

    def indexer(resource: Doc) -> tuple[Doc, list[str]]:
        return index_entries(resource, registry), compartments(resource, registry)

    await ensure_indexes(db, index_models())
    pop = Population(load_templates(), registry, ResourceStore(db, indexer))
    stats = LoadStats()
    env = {"AUTH_REQUIRED": "1", "AUTO_SEED": "1"}
    servers = [await open_server("this", uri, database, workdir, env, 4)]
    if args.compare:
        other = {**env, "AUTO_SEED": "0", "PYTHONPATH": args.compare}
        servers.append(await open_server("compare", uri, database, workdir, other, 4))
    benches = [Bench(args, db, registry, pop, stats, s, s, s, db_pid) for s in servers]
    rows: list[Row] = []
    t_start = time.perf_counter()
    try:
        for stage in (args.size // 10, args.size):
            await grow(db, pop, stage, stats)
            print(
                f"[{time.perf_counter() - t_start:5.0f} s] store at {stats.docs:,}", file=sys.stderr
            )
            for b, s in zip(benches, servers, strict=True):
                got = await measure_export(b)
                for r in got:
                    r.path = f"{s.name}: {r.path}"
                print_table(got, file=sys.stderr)
                rows += got
        for b, s in zip(benches, servers, strict=True):
            mem = export_memory_row(b)
            mem.path = f"{s.name}: {mem.path}"
            rows.append(mem)
        if args.everything:
            for b, s in zip(benches, servers, strict=True):
                for r in await measure_everything(b):
                    r.path = f"{s.name}: {r.path}"
                    rows.append(r)
        print(f"\n== one run, one database: {stats.docs:,} Synthea resources (+ history, seed)")
        print_table(rows)
    finally:
        for s in servers:
            s.load.close()
            await s.http.aclose()
            s.proc.terminate()
        for s in servers:
            s.proc.wait(timeout=60)
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=10000, help="Synthea resources at 10x")
    parser.add_argument("--runs", type=int, default=2, help="timed exports per size and side")
    parser.add_argument("--compare", default="", help="another checkout's server, same run")
    parser.add_argument("--everything", action="store_true")
    parser.add_argument("--rounds", type=int, default=3, help="$everything rounds")
    parser.add_argument("--log-dir", type=Path, help="keep the servers' and database's logs")
    args = parser.parse_args()
    # What bench/all.py's measurements read from their arguments.
    args.sizes = [args.size]
    args.export_runs = args.runs
    args.n_everything, args.concurrency_everything, args.warmup = 16, 4, 8
    with tempfile.TemporaryDirectory() as tmp:
        work = args.log_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        uri = os.environ.get("MONGODB_URI")
        secantus = None
        if not uri:
            secantus, uri = start_secantus(work / "db", memory=False)
        try:
            asyncio.run(run(args, uri, work, secantus.pid if secantus else None))
        finally:
            if secantus:
                secantus.kill()
                secantus.wait(timeout=60)


if __name__ == "__main__":
    main()
