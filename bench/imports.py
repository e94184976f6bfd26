"""$import: the Synthea data as NDJSON pulled through the import job beside raw `insert_many`.

    python -m bench.imports [--bundles 16]

Starts SecantusDB in memory (or uses MONGODB_URI), serves the Synthea bundles turned into
NDJSON (one file per type, fhir_server/exchange/imports/ndjson.py) from a local HTTP
server, and runs one import job's inputs through `run.run_input` exactly as a server
process runs them (fetch over HTTP, validation, conditional writes in one transaction per
batch, a Provenance per written version, checkpoints), into a fresh database with the
server's indexes. Then the raw driver writes the same resources with one `insert_many` per
type into another fresh database. Prints resources/s of each and the ratio import / raw
(issue 15's goal: 0.5 or more), and the rate of importing the same files again (nothing
changes). The database's own speed cancels out of the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import threading
import time
import uuid
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from fhir_server.exchange.imports.ndjson import by_type, lines
from fhir_server.exchange.imports.run import blank_state, run_input
from fhir_server.exchange.imports.store import ImportStore, new_id, now
from fhir_server.exchange.imports.table import load_table
from fhir_server.rest.messages import FhirRequest


def serve(files: dict[str, bytes]) -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = files.get(self.path, b"")
            self.send_response(200 if self.path in files else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}"


async def run_job(ctx: Any, inputs: list[tuple[str, str]]) -> dict[str, int]:
    store = ImportStore(ctx.store.db, 60_000)
    await store.ensure_indexes()
    t = now()
    job: dict[str, Any] = {
        "_id": new_id(),
        "status": "in-progress",
        "owner": None,
        "partner": {"client": "bench", "organization": "Organization/bench"},
        "inputs": [{"type": rt, "url": u, "state": blank_state()} for rt, u in inputs],
        "claim": new_id(),
        "lease": t + timedelta(hours=1),
        "expires": t + timedelta(hours=1),
    }
    await store.create(job)
    req = FhirRequest(method="POST", path=["$import"])
    async with httpx.AsyncClient() as client:
        for i in range(len(inputs)):
            await run_input(ctx, store, load_table(), job, i, req, 3600, client)
    totals = dict.fromkeys(("created", "updated", "unchanged", "failed"), 0)
    for item in job["inputs"]:
        for k in totals:
            totals[k] += item["state"][k]
    return totals


async def main(n_bundles: int) -> None:
    from fhir_server.db.embedded import EmbeddedDatabase
    from tests.conftest import make_settings, running_app, synthea_bundles

    embedded = None
    uri = os.environ.get("MONGODB_URI")
    if not uri:
        embedded = EmbeddedDatabase(Path(tempfile.mkdtemp()), memory=True)
        uri = embedded.start()
    try:
        groups = by_type(b for _, b in synthea_bundles()[:n_bundles])
        # Referenced types first, as a partner would send them.
        order = sorted(
            groups, key=lambda rt: (rt != "Patient", rt not in ("Organization", "Practitioner"), rt)
        )
        files = {f"/{rt}.ndjson": lines(groups[rt]) for rt in order}
        server, base = serve(files)
        n = sum(len(v) for v in groups.values())
        inputs = [(rt, f"{base}/{rt}.ndjson") for rt in order]
        async with running_app(make_settings(uri)) as c:
            ctx = c.app.state.ctx
            t0 = time.perf_counter()
            first = await run_job(ctx, inputs)
            imp = time.perf_counter() - t0
            t0 = time.perf_counter()
            again = await run_job(ctx, inputs)
            re_imp = time.perf_counter() - t0
            raw_db = ctx.store.client[f"bench_raw_{uuid.uuid4().hex[:8]}"]
            t0 = time.perf_counter()
            for rt in order:
                await raw_db[rt].insert_many([dict(r) for r in groups[rt]], ordered=False)
            raw = time.perf_counter() - t0
            await ctx.store.client.drop_database(raw_db.name)
        server.shutdown()
        print(f"resources: {n} in {len(order)} NDJSON files ({n_bundles} Synthea bundles)")
        print(f"import:    {n / imp:8.1f} resources/s  {first}")
        print(f"re-import: {n / re_imp:8.1f} resources/s  {again}")
        print(f"raw insert_many: {n / raw:8.1f} resources/s")
        print(f"ratio import / raw: {raw / imp:.3f} (goal >= 0.5)")
    finally:
        if embedded is not None:
            embedded.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bundles", type=int, default=16)
    args = ap.parse_args()
    asyncio.run(main(args.bundles))
