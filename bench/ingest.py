"""Ingest: the Synthea transaction bundles through the server's path beside raw `insert_many`.

    python -m bench.ingest [--data DIR] [--rounds 2]

Starts a database (SecantusDB in memory, or MONGODB_URI) and, in one run on it, for each
round:

- **server**: every bundle of DIR (default: the 16 Synthea bundles, 3,507 resources) through
  `fhir-server load`'s path (`loader.Pipeline`, as `load_paths` runs it: the transaction
  bundle processing of `POST /fhir`, validation, reference resolution, write rules, one
  database transaction per bundle with its writes in bulk, the next bundle prepared while
  one commits) into a fresh database with the server's indexes;
- **raw**: the very documents the server stored (current documents and their history
  versions, read back from that database) written into another fresh database with the
  same indexes by the raw driver, one `insert_many` per collection per bundle, no
  transaction, no validation.

- **raw in transactions**: the same, each bundle's two `insert_many` in one transaction, to
  show what all-or-nothing costs the database itself.

It prints resources/s of each, the ratio server / raw (issue 11's goal: 0.5 or more), the
ratio server / raw in transactions and the per-bundle latency p50 / p99 of server and raw. The database's own speed cancels out of the ratio;
the absolute rates depend on the machine and its load. `measure()` is what `make bench`
calls.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from fhir_server.config import Settings
from fhir_server.db.client import ensure_indexes, open_client
from fhir_server.db.embedded import EmbeddedDatabase
from fhir_server.loader import LoadSummary, Pipeline
from fhir_server.search.indexes import index_models

Doc = dict[str, Any]
SYNTHEA = Path(__file__).resolve().parent.parent / "tests" / "data" / "synthea-r4"


@dataclass(frozen=True)
class IngestFigures:
    """One round's figures: rates in resources/s, latencies in ms per bundle."""

    resources: int
    bundles: int
    server_per_s: float
    raw_per_s: float
    ratio: float
    server_p50_ms: float
    server_p99_ms: float
    raw_p50_ms: float
    raw_p99_ms: float
    # The same raw writes, each bundle's two inside one transaction: what all-or-nothing
    # costs the database itself.
    raw_txn_per_s: float
    ratio_to_raw_txn: float


def read_bundles(data: Path) -> list[tuple[str, Doc]]:
    """The bundles of `data` (`*.json` or `*.json.gz`), sorted by name."""
    import gzip

    out = []
    for p in sorted(data.iterdir()):
        if p.name.endswith(".json.gz"):
            out.append((p.name, orjson.loads(gzip.decompress(p.read_bytes()))))
        elif p.suffix == ".json":
            out.append((p.name, orjson.loads(p.read_bytes())))
    return out


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


@asynccontextmanager
async def _server_context(uri: str, database: str) -> AsyncIterator[Any]:
    from fhir_server.app import build_context

    client = open_client(uri, timeout_ms=10_000)
    settings = Settings(mongodb_uri=uri, database=database, auto_seed=False, auth_required=False)
    try:
        ctx = build_context(settings, client[database])
        await ensure_indexes(ctx.store.db, index_models())
        yield ctx
    finally:
        await _drop(uri, database)
        await client.close()


async def _drop(uri: str, database: str) -> None:
    """Drop a benchmark database; the embedded one takes longer than a socket timeout to
    drop thousands of indexed documents, so wait for it on its own terms."""
    admin = open_client(uri, timeout_ms=10_000, socket_timeout_ms=600_000)
    try:
        await admin.drop_database(database)
    finally:
        await admin.close()


async def measure(
    uri: str, *, data: Path = SYNTHEA, rounds: int = 1, bundles: list[tuple[str, Doc]] | None = None
) -> list[IngestFigures]:
    """Load the bundles of `data` through the server's path and with raw `insert_many`, on
    the database at `uri`, `rounds` times; one `IngestFigures` per round."""
    work = bundles if bundles is not None else read_bundles(data)
    out = []
    for _ in range(rounds):
        out.append(await _round(uri, work))
    return out


async def _round(uri: str, bundles: list[tuple[str, Doc]]) -> IngestFigures:
    tag = uuid.uuid4().hex[:8]
    n = sum(len(b.get("entry") or []) for _, b in bundles)
    raw_ms: list[float] = []
    async with _server_context(uri, f"ingest_srv_{tag}") as ctx:
        summary = LoadSummary()
        # Copies: the server's path must not see a bundle another round already changed.
        work = [(name, orjson.loads(orjson.dumps(b))) for name, b in bundles]
        marks: list[float] = []
        pipeline = Pipeline(ctx, summary, lambda _: marks.append(time.perf_counter()))
        t0 = time.perf_counter()
        for name, bundle in work:
            await pipeline.add(name, bundle)
        await pipeline.drain()
        server_s = time.perf_counter() - t0
        # Bundles overlap (the next one is prepared while one commits): per bundle is the
        # time from one commit to the next.
        server_ms = [(b - a) * 1000 for a, b in zip([t0, *marks], marks, strict=False)]
        if summary.failures:
            raise RuntimeError(f"the server refused part of the data: {summary.failures[:3]}")
        # The documents the server stored, grouped per bundle by the order they were written.
        docs = [d async for d in ctx.store.resources.find({}).sort("lu", 1)]
        hist = {d["_id"]: d async for d in ctx.store.history.find({})}
    groups: list[tuple[list[Doc], list[Doc]]] = []
    i = 0
    for _, b in bundles:
        k = len(b.get("entry") or [])
        cur = docs[i : i + k]
        groups.append((cur, [hist[f"{d['_id']}/{d['vid']}"] for d in cur]))
        i += k
    raw_s = await _raw(uri, f"ingest_raw_{tag}", groups, raw_ms, in_transaction=False)
    raw_txn_s = await _raw(uri, f"ingest_rawtx_{tag}", groups, [], in_transaction=True)
    return IngestFigures(
        resources=n,
        bundles=len(bundles),
        server_per_s=n / server_s,
        raw_per_s=n / raw_s,
        ratio=raw_s / server_s,
        server_p50_ms=statistics.median(server_ms),
        server_p99_ms=percentile(server_ms, 0.99),
        raw_p50_ms=statistics.median(raw_ms),
        raw_p99_ms=percentile(raw_ms, 0.99),
        raw_txn_per_s=n / raw_txn_s,
        ratio_to_raw_txn=raw_txn_s / server_s,
    )


async def _raw(
    uri: str,
    database: str,
    groups: list[tuple[list[Doc], list[Doc]]],
    latencies_ms: list[float],
    *,
    in_transaction: bool,
) -> float:
    """Seconds for the raw driver to write `groups` (per bundle: current documents, history
    versions) with one `insert_many` each, on a fresh database with the server's indexes."""
    client = open_client(uri, timeout_ms=10_000)
    db = client[database]
    try:
        await ensure_indexes(db, index_models())
        t0 = time.perf_counter()
        for cur, hist in groups:
            t = time.perf_counter()
            if in_transaction:
                async with client.start_session() as s, await s.start_transaction():
                    await db.history.insert_many(hist, session=s)
                    await db.resources.insert_many(cur, session=s)
            else:
                await db.history.insert_many(hist, ordered=False)
                await db.resources.insert_many(cur, ordered=False)
            latencies_ms.append((time.perf_counter() - t) * 1000)
        return time.perf_counter() - t0
    finally:
        await _drop(uri, database)
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=SYNTHEA)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--bundles", type=int, default=0, help="only the first N bundles")
    args = parser.parse_args()
    work = read_bundles(args.data)[: args.bundles or None]

    async def run(uri: str) -> list[IngestFigures]:
        return await measure(uri, rounds=args.rounds, bundles=work)

    uri = os.environ.get("MONGODB_URI")
    if uri:
        figures = asyncio.run(run(uri))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            embedded = EmbeddedDatabase(Path(tmp), memory=True)
            try:
                figures = asyncio.run(run(embedded.start()))
            finally:
                embedded.stop()
    print(
        f"{'round':<6}{'resources':>10}{'server/s':>10}{'raw/s':>8}{'ratio':>7}"
        f"{'raw tx/s':>10}{'ratio':>7}  per bundle p50/p99 ms: server, raw"
    )
    for i, f in enumerate(figures, start=1):
        print(
            f"{i:<6}{f.resources:>10}{f.server_per_s:>10.1f}{f.raw_per_s:>8.1f}{f.ratio:>7.2f}"
            f"{f.raw_txn_per_s:>10.1f}{f.ratio_to_raw_txn:>7.2f}  "
            f"{f.server_p50_ms:.0f}/{f.server_p99_ms:.0f}, {f.raw_p50_ms:.0f}/{f.raw_p99_ms:.0f}"
        )


if __name__ == "__main__":
    main()
