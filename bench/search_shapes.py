"""A string search and a token search through HTTP beside the raw indexed `find`, as ratios.

    python -m bench.search_shapes [--size 3507] [--samples 40]

`measure(base_url, db, ...)` is the part `bench/all.py` (`make bench`) calls with its own
server and database; `main` starts its own: SecantusDB standalone in a temporary directory
(or MONGODB_URI), the Synthea bundles copied in with the raw driver (bench/search.py's
loader, the server's storage shape and indexes), and a `fhir-server serve` (AUTH_REQUIRED=0)
on it. Measured, in one run on the same database, alternating one request each way:

- `Patient?family=<a stored family name>`: through HTTP (response read whole) against the
  raw driver's best indexed query for the same rows: on SecantusDB the plain range
  `{rt: Patient, ix.s: {$gte: "family|x", $lt: "family|x\\uffff"}}` on `(rt, ix.s, _id)`
  (what secantus_plan.py sends), on MongoDB the `$elemMatch` the server sends; sorted by
  `_id`, `_count + 1` rows, and `count_documents` when there is a next page;
- `Observation?code=<the most common code>`: against `{rt: Observation, ix.k: "code=x"}`
  on `(rt, ix.k, _id)`, the same way;

and returns, per query, the p50 of each side in ms and the ratio raw p50 / server p50 (1.0:
the server as fast as the database alone; the goal is 0.67 or more).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from fhir_server.search.execute import uses_elem_match
from fhir_server.search.query import TOP
from fhir_server.search.values import norm

Doc = dict[str, Any]
COUNT = 50  # the server's default `_count`


async def _family(db: AsyncDatabase[Doc]) -> str:
    doc = await db["resources"].find_one({"rt": "Patient"}, {"res.name": 1})
    if doc is None:
        raise SystemExit("no Patient stored")
    return str(doc["res"]["name"][0]["family"])


async def _common_code(db: AsyncDatabase[Doc]) -> str:
    """The code of the most common Observation code (by its `code=x` key), among a sample."""
    counts: dict[str, int] = {}
    async for d in db["resources"].find({"rt": "Observation"}, {"res.code": 1}).limit(500):
        for c in d["res"].get("code", {}).get("coding", [])[:1]:
            counts[c["code"]] = counts.get(c["code"], 0) + 1
    if not counts:
        raise SystemExit("no Observation stored")
    return max(counts, key=lambda k: counts[k])


async def _raw(db: AsyncDatabase[Doc], filt: Doc) -> int:
    """What one search page asks the database at best: the rows, and the total if paged."""
    docs = [
        d
        async for d in db["resources"]
        .find(filt, {"res": 1, "lu": 1, "ix.o": 1, "comp": 1})
        .sort([("_id", 1)])
        .limit(COUNT + 1)
    ]
    if len(docs) > COUNT:
        return await db["resources"].count_documents(filt)
    return len(docs)


async def _server(http: httpx.AsyncClient, path: str, params: dict[str, str]) -> int:
    r = await http.get(path, params=params)
    r.raise_for_status()
    return int(r.json().get("total", 0))


async def measure(
    base_url: str,
    db: AsyncDatabase[Doc],
    *,
    samples: int = 40,
    headers: dict[str, str] | None = None,
    family: str | None = None,
    code: str | None = None,
) -> dict[str, dict[str, float]]:
    """Per query ("family", "token"): server and raw p50 (ms), their ratio, the matches.

    `base_url` is the FHIR base of a server reading `db` (`http://host:port/fhir`);
    `headers` carries a bearer token when the server requires one."""
    family = family or await _family(db)
    code = code or await _common_code(db)
    folded = norm(family)
    if await uses_elem_match(db):
        fam_filter: Doc = {
            "rt": "Patient",
            "ix.s": {"$elemMatch": {"$gte": f"family|{folded}", "$lt": f"family|{folded}{TOP}"}},
        }
    else:
        fam_filter = {
            "rt": "Patient",
            "ix.s": {"$gte": f"family|{folded}", "$lt": f"family|{folded}{TOP}"},
        }
    shapes = {
        "family": ("Patient", {"family": family}, fam_filter),
        "token": ("Observation", {"code": code}, {"rt": "Observation", "ix.k": f"code={code}"}),
    }
    out: dict[str, dict[str, float]] = {}
    async with httpx.AsyncClient(base_url=base_url, headers=headers or {}, timeout=60) as http:
        for name, (rt, params, filt) in shapes.items():
            server_ms: list[float] = []
            raw_ms: list[float] = []
            want = await _raw(db, filt)
            got = await _server(http, f"/{rt}", params)
            if got != want:
                raise SystemExit(f"{name}: the server found {got}, the raw query {want}")
            for _ in range(samples):
                t0 = time.perf_counter()
                await _server(http, f"/{rt}", params)
                t1 = time.perf_counter()
                await _raw(db, filt)
                t2 = time.perf_counter()
                server_ms.append((t1 - t0) * 1000)
                raw_ms.append((t2 - t1) * 1000)
            s, r = statistics.median(server_ms), statistics.median(raw_ms)
            out[name] = {"server_p50_ms": s, "raw_p50_ms": r, "ratio": r / s, "matches": want}
    return out


def report(results: dict[str, dict[str, float]]) -> str:
    lines = ["query            server p50   raw p50   ratio (raw/server)   matches"]
    for name, m in results.items():
        lines.append(
            f"{name:<16} {m['server_p50_ms']:>8.1f} ms {m['raw_p50_ms']:>7.1f} ms"
            f" {m['ratio']:>10.2f}x {int(m['matches']):>16}"
        )
    return "\n".join(lines)


async def _run(uri: str, size: int, samples: int, rounds: int, workdir: Path, audit: bool) -> None:
    from bench.crud import start_server
    from bench.search import LoadStats, Population, grow, load_templates
    from fhir_server.db.client import ensure_indexes, open_client
    from fhir_server.search.extract import compartments, index_entries
    from fhir_server.search.indexes import index_models
    from fhir_server.search.registry import Registry
    from fhir_server.storage.store import ResourceStore

    database = f"bench_{uuid.uuid4().hex[:8]}"
    client: AsyncMongoClient[Doc] = open_client(
        uri, timeout_ms=30_000, socket_timeout_ms=600_000
    )  # loaded machine
    db = client[database]
    registry = Registry.load_default()

    def indexer(resource: Doc) -> tuple[Doc, list[str]]:
        return index_entries(resource, registry), compartments(resource, registry)

    await ensure_indexes(db, index_models())
    pop = Population(load_templates(), registry, ResourceStore(db, indexer))
    await grow(db, pop, size, LoadStats())
    env = {} if audit else {"AUDIT": "0"}
    proc, base = start_server(uri, database, workdir / "server.log", extra_env=env)
    try:
        n = await db["resources"].count_documents({})
        print(
            f"{n} resources; auditing {'on' if audit else 'off (AUDIT=0)'}; "
            f"{samples} requests each way per round, alternating"
        )
        for i in range(rounds):
            print(f"round {i + 1}:\n{report(await measure(base, db, samples=samples))}")
    finally:
        with contextlib.suppress(PyMongoError):
            await client.drop_database(database)
        await client.close()
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    import os

    from bench.search import start_secantus

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--size", type=int, default=3507, help="resources to load (default one copy)"
    )
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2, help="repeat the figures")
    parser.add_argument(
        "--no-audit", action="store_true", help="run the server with AUDIT=0 (diagnosis only)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        uri = os.environ.get("MONGODB_URI")
        proc = None
        if not uri:
            proc, uri = start_secantus(workdir / "db", memory=True)
        try:
            asyncio.run(_run(uri, args.size, args.samples, args.rounds, workdir, not args.no_audit))
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
