"""Where a proxy's request goes: the database commands one request issues, and their cost.

    python -m bench.proxy [--n 100] [--user sponsor] [--profile]

Starts a database (SecantusDB in memory, or MONGODB_URI), seeds the development population
and calls the request pipeline in-process (fhir_server/pipeline.py, no HTTP) with a seed
user's token claims (the sponsor by default: a proxy of a child, an adolescent and a
granted adult; `system` for the backend service; verification is not what is measured;
auditing off unless `--audit`, whose batched writes are flushed inside the timing). For each request
(`GET Patient/<own id>`, `GET Observation?_count=50`, `GET Patient?family=<a family>`):

- every database command the request sends, counted through PyMongo's command monitoring
  (`CommandListener`), grouped by collection and the filter's shape, with the driver's
  round-trip time (the database's work, on loopback);
- the database process's CPU and this process's CPU per request (n requests);
- `--profile`: this process's top functions by cumulative time (cProfile).

Run with `PYTHONPATH=<another checkout>` from outside the checkout to compare versions.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient, monitoring

from bench.crud import benchmark_database, cpu_seconds
from bench.policy import auth_for
from smart_auth.scopes import parse_scopes

ROOT = Path(__file__).resolve().parents[1]
SYSTEM = parse_scopes("system/*.rs")


def shape(node: Any) -> Any:
    """A filter with its values replaced by their type (so requests group by shape)."""
    if isinstance(node, dict):
        return {k: shape(v) for k, v in node.items()}
    if isinstance(node, list):
        return [shape(v) for v in node[:1]] + (["..."] if len(node) > 1 else [])
    return type(node).__name__


class Counter(monitoring.CommandListener):
    """Commands and their round-trip time, keyed by collection, command and filter shape."""

    def __init__(self) -> None:
        self.on = False
        self.pending: dict[int, str] = {}
        self.count: dict[str, int] = defaultdict(int)
        self.micros: dict[str, int] = defaultdict(int)

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if not self.on:
            return
        cmd = event.command
        name = event.command_name
        coll = cmd.get(name) if isinstance(cmd.get(name), str) else ""
        filt = cmd.get("filter", cmd.get("query"))
        if name == "aggregate":
            filt = cmd.get("pipeline")
        key = f"{name} {coll} {json.dumps(shape(filt), sort_keys=True)[:160]}"
        self.pending[event.request_id] = key

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        key = self.pending.pop(event.request_id, None)
        if key is not None:
            self.count[key] += 1
            self.micros[key] += event.duration_micros

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self.pending.pop(event.request_id, None)

    def reset(self) -> None:
        self.pending.clear()
        self.count.clear()
        self.micros.clear()


async def bench(args: argparse.Namespace, uri: str, db_pid: int | None) -> None:
    from fhir_server.access.audit import AuditSink
    from fhir_server.app import build_context
    from fhir_server.config import Settings
    from fhir_server.db.client import client_options, ensure_indexes
    from fhir_server.pipeline import Pipeline
    from fhir_server.rest.messages import HttpRequest
    from fhir_server.search.indexes import index_models
    from fhir_server.seeding import seed

    counter = Counter()
    settings = Settings(
        mongodb_uri=uri, database=f"bench_{uuid.uuid4().hex[:8]}", auth_required=True
    )
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        uri, event_listeners=[counter], **client_options(10_000)
    )
    try:
        ctx = build_context(settings, client[settings.database])
        await ensure_indexes(ctx.store.db, index_models())
        report = await seed(ctx)
        assert not report.failed, report.failed
        logins = json.loads((ROOT / "seed_data/logins.json").read_text())["logins"]
        if args.user == "system":
            # The backend service (`system/*.rs`): no patient confinement.
            login = {"username": "svc", "fhirUser": "Patient/sponsor-james-carter", "login": ""}
            auth = replace(auth_for(login), fhir_user=None, acr=None, scopes=SYSTEM, scope="")
        else:
            login = next(x for x in logins if x["role"] == args.user)
            auth = auth_for(login)

        async def verify(bearer: str | None) -> Any:
            return auth

        sink = AuditSink(ctx.store) if args.audit else None
        if sink is not None:
            sink.start()
        pipe = Pipeline(ctx, verify=verify, audit=sink)
        own = login["fhirUser"].split("/", 1)[1]
        me = await ctx.store.db.resources.find_one({"_id": login["fhirUser"]})
        family = (me or {}).get("res", {}).get("name", [{}])[0].get("family", "x")
        requests = {
            "read": ("Patient", own, ""),
            "search": ("Observation", None, "_count=50"),
            "family": ("Patient", None, f"family={family}"),
        }
        for rt, rid, query in requests.values():
            path = (rt, rid) if rid else (rt,)
            req = HttpRequest("GET", path, query.encode(), {"authorization": "Bearer x"}, b"")
            for _ in range(5):  # warm up
                answer = await pipe.handle(req)
                assert answer.status == 200, answer.body[:300]
            counter.reset()
            counter.on = True
            d0 = cpu_seconds(db_pid) if db_pid else 0.0
            c0, w0 = time.process_time(), time.perf_counter()
            prof = cProfile.Profile() if args.profile else None
            if prof:
                prof.enable()
            for _ in range(args.n):
                await pipe.handle(req)
            if sink is not None:
                await sink.flush()
            if prof:
                prof.disable()
            cpu = (time.process_time() - c0) / args.n * 1000
            wall = (time.perf_counter() - w0) / args.n * 1000
            dbc = ((cpu_seconds(db_pid) - d0) / args.n * 1000) if db_pid else float("nan")
            counter.on = False
            total = sum(counter.count.values()) / args.n
            rtt = sum(counter.micros.values()) / args.n / 1000
            print(
                f"\n== {args.user}: GET {'/'.join(path)}{'?' + query if query else ''}: "
                f"{total:.1f} commands/request, {rtt:.2f} ms round trips; "
                f"db CPU {dbc:.2f} ms, server CPU {cpu:.2f} ms, wall {wall:.2f} ms per request"
            )
            for key in sorted(counter.count, key=lambda k: -counter.micros[k]):
                c, us = counter.count[key], counter.micros[key]
                print(f"  {c / args.n:5.1f} x {us / c / 1000:6.2f} ms  {key}")
            if prof:
                pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
        await client.drop_database(settings.database)
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument(
        "--user",
        default="sponsor",
        help="a role of seed_data/logins.json, or system (the backend service)",
    )
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--audit", action="store_true", help="audit on (the AuditEvent sink)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, benchmark_database(Path(tmp)) as (uri, pid):
        asyncio.run(bench(args, uri, pid))


if __name__ == "__main__":
    main()
