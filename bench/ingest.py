"""Ingest: the Synthea transaction bundles through the server's path beside raw `insert_many`.

    python -m bench.ingest [--data DIR] [--rounds 2]

Starts a database (SecantusDB in memory, or MONGODB_URI) and, in one run on it, for each
round:

- **server**: every bundle of DIR (default: the 16 Synthea bundles, 3,507 resources) through
  `fhir-server load`'s path (`loader.load_paths`: the transaction bundle processing of
  `POST /fhir`, validation, reference resolution, write rules, one database transaction per
  bundle) into a fresh database with the server's indexes;
- **raw**: the very documents the server stored (current documents and their history
  versions, read back from that database) written into another fresh database with the
  same indexes by the raw driver, one `insert_many` per collection per bundle, no
  transaction, no validation.

It prints resources/s of each, the ratio server / raw (issue 11's goal: 0.5 or more) and
the per-bundle latency p50 / p99 of both. The database's own speed cancels out of the ratio;
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from fhir_server.config import Settings
from fhir_server.db.client import ensure_indexes, open_client
from fhir_server.db.embedded import EmbeddedDatabase
from fhir_server.loader import LoadSummary, load_bundle
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
    server_ms: list[float] = []
    raw_ms: list[float] = []
    async with _server_context(uri, f"ingest_srv_{tag}") as ctx:
        summary = LoadSummary()
        # Copies: the server's path must not see a bundle another round already changed.
        work = [(name, orjson.loads(orjson.dumps(b))) for name, b in bundles]
        t0 = time.perf_counter()
        for name, bundle in work:
            t = time.perf_counter()
            await load_bundle(ctx, name, bundle, summary)
            server_ms.append((time.perf_counter() - t) * 1000)
        server_s = time.perf_counter() - t0
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
    client = open_client(uri, timeout_ms=10_000)
    raw_db = client[f"ingest_raw_{tag}"]
    try:
        await ensure_indexes(raw_db, index_models())
        t0 = time.perf_counter()
        for cur, h in groups:
            t = time.perf_counter()
            await raw_db.history.insert_many(h, ordered=False)
            await raw_db.resources.insert_many(cur, ordered=False)
            raw_ms.append((time.perf_counter() - t) * 1000)
        raw_s = time.perf_counter() - t0
    finally:
        await _drop(uri, raw_db.name)
        await client.close()
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
    )


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
    for f in figures:
        print(asdict(f))


if __name__ == "__main__":
    main()
