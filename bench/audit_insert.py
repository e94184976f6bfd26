"""The database's CPU per AuditEvent written, by the log's index layout, in one run.

    python -m bench.audit_insert [--n 2000] [--rounds 3]

One SecantusDB (standalone, on disk, as bench/search.py) and the sink's writes (batches of
200 by `insert_many`) of events as the server builds them (`audit_events` +
`AuditStore.document`) into two collections, in alternating rounds: `before`, with the
indexes the log had before issue 11's index cut (`(ix.k, _id)`, `(ix.lo, _id)`,
`(ix.hi, _id)`, `(lu, _id)`, `(comp, ix.o.date, _id)`), and `now`, with the log's own
(`(ix.q, _id)`, `(ix.lo, _id)`, `(lu, _id)`, `(comp, ix.o.date, _id)`: storage/audit_store.py).
Prints the database process's CPU per event for each, the median of the rounds, and the
ratio (docs/storage.md, "The audit log"). CPU time, not rates: steadier on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path
from typing import Any

import psutil
from pymongo import ASCENDING, AsyncMongoClient, IndexModel

from bench.search import start_secantus
from fhir_server.access.audit import AUDIT_EVENT, AuditRecord, audit_events
from fhir_server.access.audit_log import audit_store
from fhir_server.search.registry import Registry
from fhir_server.storage.audit_store import QUERY_KEYS
from fhir_server.storage.store import ResourceStore, new_id, no_index

Doc = dict[str, Any]
BATCH = 200  # the sink's (access/audit.py)
BEFORE = [
    IndexModel([(f, ASCENDING), ("_id", ASCENDING)], name=name)
    for f, name in (("ix.k", "k_id"), ("ix.lo", "lo_id"), ("ix.hi", "hi_id"), ("lu", "lu_id"))
] + [IndexModel([("comp", ASCENDING), ("ix.o.date", ASCENDING), ("_id", ASCENDING)])]


async def run(n: int, rounds: int) -> None:
    work = Path(tempfile.mkdtemp())
    proc, uri = start_secantus(work, memory=False)
    db_cpu = psutil.Process(proc.pid)
    try:
        db = AsyncMongoClient(uri).bench_audit
        log = audit_store(ResourceStore(db, no_index), Registry.load_default())

        def event(before: bool) -> Doc:
            pid = new_id()
            rec = AuditRecord(
                "GET", ["Patient", pid], status=200, client_id="bench", token_id=new_id()
            )
            rec.patients = [f"Patient/{pid}"]
            e = {**audit_events(rec)[0], "id": new_id()}
            doc = log.document(AUDIT_EVENT, e["id"], 1, e)
            if before:
                doc["ix"].pop(QUERY_KEYS)
            return doc

        await db.before.create_indexes(BEFORE)
        await db.now.create_indexes(log.indexes)
        spent: dict[str, list[float]] = {"before": [], "now": []}
        for r in range(rounds + 1):  # the first round of each warms up
            for name in ("before", "now") if r % 2 == 0 else ("now", "before"):
                docs = [event(name == "before") for _ in range(n)]
                t0 = db_cpu.cpu_times()
                for i in range(0, n, BATCH):
                    await db[name].insert_many(docs[i : i + BATCH], ordered=False)
                t1 = db_cpu.cpu_times()
                if r:
                    spent[name].append((t1.user + t1.system - t0.user - t0.system) / n)
        for name, values in spent.items():
            print(
                f"{name:<7} database CPU {statistics.median(values) * 1000:.3f} ms/event"
                f" (rounds: {', '.join(f'{v * 1000:.3f}' for v in values)})"
            )
        ratio = statistics.median(spent["now"]) / statistics.median(spent["before"])
        print(
            f"now / before: {ratio:.2f}; indexes now: {[m.document['name'] for m in log.indexes]}"
        )
    finally:
        proc.kill()
        proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000, help="events per round and side")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(run(args.n, args.rounds))


if __name__ == "__main__":
    main()
