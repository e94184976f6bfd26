"""Every figure of issue 11 in one run on one database: the server beside the raw driver.

    python -m bench.all [--sizes 2500,10000] [--n 300] [--rounds 4] [--concurrency 16]
    make bench                       # the same, with the defaults

One embedded SecantusDB (standalone, on disk, 4 GB cache: bench/search.py says why), or
`MONGODB_URI`, and three real `fhir-server serve` processes on the same database:

- `audit`:   tokens required, auditing on (the production configuration), seeds the database;
- `noaudit`: tokens required, `AUDIT=0` (the benchmark/diagnostic switch);
- `open`:    tokens off (`AUTH_REQUIRED=0`): the ingest row (the backend-service client
  may only read) and the "no token, no audit" reference row.

The token servers get a `system/*.rs` token from the seed's backend-service client (SMART
Backend Services, RFC 7523 client assertion). The store is grown with copies of the 16
Synthea bundles (bench/search.py's loader: `insert_many` of the server's own stored shape,
history versions included) through the stages: `max(sizes) / 10` (the `$export` 1x point),
each of `--sizes` (the portal queries), and at the largest size everything else.

Every row compares the server with the raw driver doing the same database work on the same
documents in the same run; rounds alternate between the sides (their order rotating), so
drift on a shared machine hits both; a warm-up round of each side is excluded; p50/p99 come
from per-request timings pooled over the rounds, the rate is the median of the rounds' rates.
After each round the run waits until that side's server and the database are quiet, and
charges the wait to the round (`drain`): the audit sink writes a round's AuditEvents after
its answers, and that work is the round's, not the next side's.

| row | server | raw driver |
|---|---|---|
| read | `GET Patient/<id>` | `find_one({_id})` |
| family / token search | `Patient?family=`, `Patient?identifier=sys\\|value` | the server's own filter (`parse_search` + `search_filter` + `plan`), `find().sort().limit(count + 1)` (+ `count_documents` when a next page exists); where that filter is an `$elemMatch` range (a scan on SecantusDB), also the plain indexed range, which carries the goal |
| portal queries | the four of bench/search.py, sequential, at each size | the same, as bench/search.py |
| `$everything` | `GET Patient/<id>/$everything` (every page) | `find_one` of the Patient, `find({comp})` of its compartment, `find({_id: {$in}})` of the includes the server returned |
| `$export` | kick-off, status polled every 0.1 s, every file downloaded | one cursor per exported type, `res` written as NDJSON lines |
| ingest | `POST` of a Synthea transaction Bundle (`open` server) | `insert_many` of the very documents (and history versions) it stored, with fresh ids |

HTTP load comes from bench/loadgen.py (keep-alive HTTP/1.1 on asyncio, about 0.2 ms of
client CPU per request here); its own CPU per request and share of a core is printed beside
each HTTP row, so a client-bound figure shows. The servers run with raised query and socket
limits (`LIMITS`), so a busy machine gives figures rather than 503s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
from pymongo import ASCENDING, AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from bench import loadgen
from bench.audit import system_token
from bench.crud import cpu_seconds, start_server
from bench.search import (
    QUERIES,
    SYNTHEA,
    LoadStats,
    Population,
    bundle_answer,
    grow,
    load_templates,
    percentile,
    raw_plan,
    raw_search,
    rss_mb,
    start_secantus,
)
from bench.soak import user_token
from fhir_server.db.client import ensure_indexes, open_client
from fhir_server.search.extract import compartments, index_entries
from fhir_server.search.indexes import index_models
from fhir_server.search.registry import Registry
from fhir_server.storage.store import ResourceStore

Doc = dict[str, Any]
NDJSON_ACCEPT = "application/fhir+json"


# -- figures ----------------------------------------------------------------------------


@dataclass
class Side:
    """One side of a comparison: pooled per-request latencies and per-round rates."""

    label: str
    latencies: list[float] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    client_cpu: float = 0.0
    wall: float = 0.0
    requests: int = 0
    server_cpu: float | None = None  # CPU seconds of the server process over the rounds
    db_cpu: float | None = None  # of the embedded database process

    def add(self, r: loadgen.Round) -> None:
        self.latencies += r.latencies
        self.rates.append(r.rate)
        self.errors.update(r.errors)
        self.client_cpu += r.client_cpu
        self.wall += r.wall
        self.requests += len(r.latencies) + sum(r.errors.values())

    @property
    def rate(self) -> float:
        return statistics.median(self.rates) if self.rates else float("nan")

    def p(self, q: float) -> float:
        return percentile(self.latencies, q) if self.latencies else float("nan")

    def cpu_note(self) -> str:
        """Server and database CPU per request: steadier than rates on a shared machine."""
        if not self.requests:
            return ""
        out = []
        if self.server_cpu is not None:
            out.append(f"server CPU {self.server_cpu / self.requests * 1000:.2f} ms/req")
        if self.db_cpu is not None:
            out.append(f"db CPU {self.db_cpu / self.requests * 1000:.2f} ms/req")
        return ", ".join(out)

    def client_note(self) -> str:
        """The load generator's own CPU per request and share of one core."""
        if not self.requests or not self.wall:
            return ""
        per = self.client_cpu / self.requests * 1000
        return f"client {per:.2f} ms/req, {self.client_cpu / self.wall:.0%} of a core"


@dataclass
class Row:
    path: str
    unit: str  # what the rates count
    a: Side | None  # the server (or the first of two configurations)
    b: Side | None  # the raw driver (or the baseline configuration)
    vs: str  # what `b` is
    goal: str = "-"  # ">= 0.80", "<= 1.50" or "-"
    ratio: float | None = None  # a.rate / b.rate unless set
    note: str = ""

    def value(self) -> float | None:
        if self.ratio is not None:
            return self.ratio
        if self.a is None or self.b is None or not self.a.rates or not self.b.rates:
            return None
        return self.a.rate / self.b.rate

    def verdict(self) -> str:
        v = self.value()
        if v is None:
            return "n/a"
        if self.goal == "-":
            return "-"
        op, bar = self.goal.split()
        ok = v >= float(bar) if op == ">=" else v <= float(bar)
        errors = sum((s.errors.total() for s in (self.a, self.b) if s), 0)
        return ("pass" if ok else "FAIL") + (" (errors)" if errors else "")


def notes(server: Side, raw: Side) -> str:
    """The CPU figures of an HTTP row: client, server and database per request."""
    parts = [server.client_note(), server.cpu_note()]
    if raw.db_cpu is not None:
        parts.append(f"raw: {raw.cpu_note()}")
    return "; ".join(p for p in parts if p)


def na(path: str, why: str) -> Row:
    """A row whose server path does not exist (yet)."""
    return Row(path, "", None, None, "", note=why)


# -- servers ----------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    proc: Any
    base: str
    http: httpx.AsyncClient
    load: loadgen.Client
    tokens: bool

    @property
    def origin(self) -> str:
        return self.base.removesuffix("/fhir")

    async def login(self) -> None:
        """A fresh backend-service token (one per row: a long run outlives none)."""
        if not self.tokens:
            return
        token = await system_token(self.http, self.origin)
        self.http.headers["Authorization"] = f"Bearer {token}"
        self.load.headers["Authorization"] = f"Bearer {token}"

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    def rss(self) -> float:
        return rss_mb(self.proc.pid) or float("nan")


# Limits raised so that a busy shared machine gives figures rather than 503s (a 1,000-row
# insert or an export batch can take over 30 s there); how the default limits behave under
# load is bench/soak.py's and bench/burst.py's subject.
LIMITS = {"QUERY_MAX_TIME_MS": "120000", "DB_SOCKET_TIMEOUT_MS": "600000"}
# What every server gets besides (`--server-path`: PYTHONPATH of another checkout).
SERVER_ENV: dict[str, str] = {}


async def open_server(
    name: str, uri: str, database: str, workdir: Path, env: dict[str, str], workers: int
) -> Server:
    proc, base = start_server(
        uri, database, workdir / f"{name}.log", {**LIMITS, **SERVER_ENV, **env}
    )
    http = httpx.AsyncClient(base_url=base, timeout=600, headers={"Accept": NDJSON_ACCEPT})
    load = loadgen.Client(base, workers, {"Accept": NDJSON_ACCEPT})
    return Server(name, proc, base, http, load, env.get("AUTH_REQUIRED") == "1")


# -- alternating rounds -----------------------------------------------------------------


@dataclass
class Contender:
    side: Side
    job: loadgen.Job
    n: int
    concurrency: int
    pid: int | None = None  # the server process, whose CPU the round charges to the side


async def alternate(
    contenders: list[Contender], rounds: int, warmup: int, db_pid: int | None = None
) -> None:
    for c in contenders:  # warm-up, excluded
        await loadgen.run_round(min(warmup, c.n), c.concurrency, c.job)
        await drain([c.pid, db_pid])
    for r in range(rounds):
        k = r % len(contenders)
        for c in contenders[k:] + contenders[:k]:
            cpu0 = cpu_seconds(c.pid) if c.pid else 0.0
            db0 = cpu_seconds(db_pid) if db_pid else 0.0
            done = await loadgen.run_round(c.n, c.concurrency, c.job)
            # The round's work that outlives its last answer (the audit sink writes its
            # AuditEvents every 0.5 s) is the round's: its time and CPU are charged to it,
            # and the next side starts on a quiet database.
            done.wall += await drain([c.pid, db_pid])
            c.side.add(done)
            if c.pid:
                c.side.server_cpu = (c.side.server_cpu or 0.0) + cpu_seconds(c.pid) - cpu0
            if db_pid:
                c.side.db_cpu = (c.side.db_cpu or 0.0) + cpu_seconds(db_pid) - db0


# A process is busy in a 0.1 s sample when it used any CPU (one clock tick, 10 ms: on a
# crowded machine a busy process may get little of a core); the work is done after QUIET_S
# without a busy sample (longer than the audit sink's 0.5 s period).
SAMPLE_S = 0.1
BUSY_CPU_S = 0.01
QUIET_S = 0.7
MAX_DRAIN_S = 120.0


async def drain(pids: list[int | None]) -> float:
    """Seconds from now to the end of the last busy sample of `pids` (the round's server
    and the database) before they went quiet: 0 when they were quiet at once."""
    procs = [p for p in pids if p]
    start = last_busy = time.perf_counter()
    prev = [cpu_seconds(p) for p in procs]
    while True:
        await asyncio.sleep(SAMPLE_S)
        now = time.perf_counter()
        cur = [cpu_seconds(p) for p in procs]
        if any(c - p >= BUSY_CPU_S for c, p in zip(cur, prev, strict=True)):
            last_busy = now
        prev = cur
        if now - last_busy >= QUIET_S or now - start > MAX_DRAIN_S:
            return last_busy - start


def http_get(srv: Server, targets: list[str]) -> loadgen.Job:
    async def job(w: int, i: int) -> int:
        status, _ = await srv.load.get(w, targets[i % len(targets)])
        if status != 200:
            raise loadgen.Failed(f"HTTP {status}")
        return 1

    return job


def target(rt: str, params: list[tuple[str, str]]) -> str:
    return f"/{rt}?{urlencode(params)}" if params else f"/{rt}"


# -- the run ----------------------------------------------------------------------------


@dataclass
class Bench:
    args: argparse.Namespace
    db: AsyncDatabase[Doc]
    registry: Registry
    pop: Population
    stats: LoadStats
    audit: Server
    noaudit: Server
    open: Server
    db_pid: int | None = None
    rows: dict[str, list[Row]] = field(default_factory=dict)
    portal: dict[int, list[tuple[Side, Side]]] = field(default_factory=dict)
    export_rss: dict[int, tuple[float, float, int]] = field(default_factory=dict)
    # The patients the portal queries ask for at every size: those copied by the first one
    # (the store grows around the same rows).
    portal_patients: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return self.stats.docs

    def patients(self) -> list[str]:
        return [pid for _, pid in self.pop.patients]


async def measure_read(b: Bench) -> list[Row]:
    """GET Patient/<id> on the three servers beside `find_one` by `_id`."""
    ids = [d["_id"] async for d in b.db.resources.find({"rt": "Patient"}, {"_id": 1})]
    targets = [f"/{key}" for key in ids]
    coll = b.db.resources

    async def raw(w: int, i: int) -> int:
        if await coll.find_one({"_id": ids[i % len(ids)]}) is None:
            raise loadgen.Failed("missing")
        return 1

    n, c = b.args.n, b.args.concurrency
    sides = {k: Side(k) for k in ("raw", "audit", "noaudit", "open")}
    for s in (b.audit, b.noaudit):
        await s.login()
    await alternate(
        [
            Contender(sides["raw"], raw, n, c),
            Contender(sides["audit"], http_get(b.audit, targets), n, c, pid=b.audit.pid),
            Contender(sides["noaudit"], http_get(b.noaudit, targets), n, c, pid=b.noaudit.pid),
            Contender(sides["open"], http_get(b.open, targets), n, c, pid=b.open.pid),
        ],
        b.args.rounds,
        b.args.warmup,
        b.db_pid,
    )
    raw_side = sides["raw"]
    return [
        Row(
            "GET Patient/<id>, token + audit on",
            "req/s",
            sides["audit"],
            raw_side,
            "raw find_one",
            ">= 0.80",
            note=notes(sides["audit"], raw_side),
        ),
        Row(
            "  same, token, audit off",
            "req/s",
            sides["noaudit"],
            raw_side,
            "raw find_one",
            note=notes(sides["noaudit"], raw_side),
        ),
        Row(
            "  same, no token, no audit",
            "req/s",
            sides["open"],
            raw_side,
            "raw find_one",
            note=notes(sides["open"], raw_side),
        ),
        Row(
            "audited / not audited (GET by id)",
            "req/s",
            sides["audit"],
            sides["noaudit"],
            "AUDIT=0 server",
            ">= 0.80",
        ),
    ]


COMPARISONS = {"$gt", "$gte", "$lt", "$lte", "$eq"}


def indexed(filt: Doc) -> Doc:
    """The filter with each top-level `$elemMatch` of plain comparisons as a plain range on
    the field: the index-served find the issue measures against (`{rt, ix.s: {$gte, $lt}}`
    on `rt_ix_s`, which may match a few more documents for the server to re-check)."""
    out = {}
    for k, v in filt.items():
        inner = v.get("$elemMatch") if isinstance(v, dict) and len(v) == 1 else None
        if isinstance(inner, dict) and inner and set(inner) <= COMPARISONS:
            out[k] = dict(inner)
        else:
            out[k] = v
    return out


async def search_row(
    b: Bench, label: str, rt: str, params: list[list[tuple[str, str]]]
) -> list[Row]:
    """One search shape over several values: the server beside the raw driver running the
    server's own filter (built outside the timed part, as bench/search.py does). Where that
    filter is not index-served (a `$elemMatch` range, a scan on SecantusDB), the raw
    indexed range is measured too and the goal is against it."""
    await b.audit.login()
    plans = [await raw_plan(b.db, b.registry, rt, p) for p in params]
    ranged = [replace(p, filt=indexed(p.filt)) for p in plans]
    differs = any(r.filt != p.filt for r, p in zip(ranged, plans, strict=True))
    targets = [target(rt, p) for p in params]
    coll = b.db.resources
    # The same answers on both sides, checked once per value before timing.
    mismatches = 0
    rows = []
    for t, p in zip(targets, plans, strict=True):
        _, body = await b.audit.load.get(0, t)
        answer = await raw_search(coll, b.registry, p)
        mismatches += bundle_answer(body) != answer
        rows.append(answer.matches + answer.included)

    def raw_job(which: list[Any]) -> loadgen.Job:
        async def raw(w: int, i: int) -> int:
            await raw_search(coll, b.registry, which[i % len(which)])
            return 1

        return raw

    srv, rside, iside = Side("server"), Side("raw"), Side("raw indexed")
    n, c = b.args.n, b.args.concurrency
    contenders = [
        Contender(rside, raw_job(plans), n, c),
        Contender(srv, http_get(b.audit, targets), n, c, pid=b.audit.pid),
    ]
    if differs:
        contenders.append(Contender(iside, raw_job(ranged), n, c))
    await alternate(contenders, b.args.rounds, b.args.warmup, b.db_pid)
    note = f"{statistics.median(rows):.0f} matches; " + notes(srv, rside)
    if mismatches:
        note += f"; answers differ for {mismatches} of {len(plans)}"
    if not differs:
        return [Row(label, "req/s", srv, rside, "raw indexed find", ">= 0.67", note=note)]
    return [
        Row(label, "req/s", srv, iside, "raw indexed range", ">= 0.67", note=notes(srv, iside)),
        Row(
            "  same, vs raw with the server's filter",
            "req/s",
            srv,
            rside,
            "raw $elemMatch find",
            note=note,
        ),
    ]


async def measure_searches(b: Bench) -> list[Row]:
    # The Patients as the server returns them (whatever the stored shape).
    await b.audit.login()
    pats = [orjson.loads((await b.audit.load.get(0, f"/Patient/{p}"))[1]) for p in b.patients()]
    families = sorted({n["family"] for p in pats for n in p.get("name", []) if n.get("family")})
    ssn = "http://hl7.org/fhir/sid/us-ssn"
    idents = sorted(
        {
            f"{i['system']}|{i['value']}"
            for p in pats
            for i in p.get("identifier", [])
            if i.get("system") == ssn and i.get("value")
        }
    )
    return [
        *await search_row(b, "Patient?family=X", "Patient", [[("family", f)] for f in families]),
        *await search_row(
            b,
            "Patient?identifier=sys|value (token)",
            "Patient",
            [[("identifier", i)] for i in idents],
        ),
    ]


SPONSOR_FAMILY = "Carter"  # the seed sponsor's family name (seed_data/people.py)


async def measure_proxy(b: Bench) -> list[Row]:
    """The sponsor's token (a proxy of a child, an adolescent and a granted adult, through
    the real login pages) on `audit`: `GET Patient/<id>` of the Patients he may read beside
    `find_one` of the same ids, and `Patient?family=<his family>` beside the raw indexed
    range of the same name (what the backend token's family row is measured against; the
    server answers fewer rows, those the policy shows)."""
    token = await user_token(b.audit.origin)
    n, c = b.args.n, b.args.concurrency
    load = loadgen.Client(
        b.audit.base, c, {"Accept": NDJSON_ACCEPT, "Authorization": f"Bearer {token}"}
    )
    srv = replace(b.audit, load=load)
    try:
        status, body = await load.get(0, "/Patient?_count=200&_elements=id")
        assert status == 200, body[:300]
        ids = [f"Patient/{e['resource']['id']}" for e in orjson.loads(body).get("entry", [])]
        assert ids, "the sponsor reads no Patient"
        coll = b.db.resources

        async def raw_read(w: int, i: int) -> int:
            if await coll.find_one({"_id": ids[i % len(ids)]}) is None:
                raise loadgen.Failed("missing")
            return 1

        reads, rraw = Side("sponsor"), Side("raw")
        await alternate(
            [
                Contender(rraw, raw_read, n, c),
                Contender(reads, http_get(srv, [f"/{k}" for k in ids]), n, c, pid=b.audit.pid),
            ],
            b.args.rounds,
            b.args.warmup,
            b.db_pid,
        )
        params = [("family", SPONSOR_FAMILY)]
        plan = await raw_plan(b.db, b.registry, "Patient", params)
        ranged = replace(plan, filt=indexed(plan.filt))
        _, body = await load.get(0, target("Patient", params))
        shown = len(orjson.loads(body).get("entry", []))

        async def raw_family(w: int, i: int) -> int:
            await raw_search(coll, b.registry, ranged)
            return 1

        fam, fraw = Side("sponsor"), Side("raw indexed")
        await alternate(
            [
                Contender(fraw, raw_family, n, c),
                Contender(fam, http_get(srv, [target("Patient", params)]), n, c, pid=b.audit.pid),
            ],
            b.args.rounds,
            b.args.warmup,
            b.db_pid,
        )
    finally:
        load.close()
    return [
        Row(
            "GET Patient/<id>, sponsor (proxy) + audit",
            "req/s",
            reads,
            rraw,
            "raw find_one",
            ">= 0.80",
            note=f"{len(ids)} Patients; " + notes(reads, rraw),
        ),
        Row(
            "Patient?family=X, sponsor (proxy) + audit",
            "req/s",
            fam,
            fraw,
            "raw indexed range",
            ">= 0.67",
            note=f"{shown} shown; " + notes(fam, fraw),
        ),
    ]


async def measure_portal(b: Bench) -> list[Row]:
    """The four portal queries of bench/search.py, sequential, alternating per sample."""
    await b.audit.login()
    if not b.portal_patients:
        b.portal_patients = b.patients()
    pats = b.portal_patients
    coll = b.db.resources
    out = []
    half = max(1, b.args.samples // 2)
    for q in QUERIES:
        params = [q.params(p, b.pop.today) for p in pats]
        plans = [await raw_plan(b.db, b.registry, q.rt, p) for p in params]
        targets = [target(q.rt, p) for p in params]
        srv, rside = Side("server"), Side("raw")

        async def raw(w: int, i: int, plans: list[Any] = plans) -> int:
            await raw_search(coll, b.registry, plans[i % len(plans)])
            return 1

        await alternate(
            [
                Contender(rside, raw, half, 1),
                Contender(srv, http_get(b.audit, targets), half, 1, pid=b.audit.pid),
            ],
            2,
            2,
            b.db_pid,
        )
        out.append((srv, rside))
    b.portal[b.size] = out
    return []


def portal_rows(b: Bench) -> list[Row]:
    sizes = sorted(b.portal)
    rows = []
    for i, q in enumerate(QUERIES):
        for s in sizes:
            srv, rside = b.portal[s][i]
            rows.append(Row(f"{q.name} @{s:,}", "req/s", srv, rside, "raw same query"))
    if len(sizes) > 1:
        lo, hi = sizes[0], sizes[-1]
        for i, q in enumerate(QUERIES):
            srv_lo, raw_lo = b.portal[lo][i]
            srv_hi, raw_hi = b.portal[hi][i]
            growth = srv_hi.p(0.5) / srv_lo.p(0.5)
            rows.append(
                Row(
                    f"{q.name}: p50 {hi:,} / {lo:,}",
                    "ms",
                    srv_hi,
                    srv_lo,
                    f"server @{lo:,}",
                    "<= 1.50",
                    ratio=growth,
                    note=f"raw growth {raw_hi.p(0.5) / raw_lo.p(0.5):.2f}",
                )
            )
    return rows


async def measure_everything(b: Bench) -> list[Row]:
    await b.audit.login()
    pats = b.patients()
    coll = b.db.resources
    # The includes the server answers per patient (outside every compartment): the raw side
    # fetches the same ids with one `$in`, as everything_includes.py does per page.
    includes: dict[str, list[str]] = {}
    sizes = []
    for p in pats:
        _, body = await b.audit.load.get(0, f"/Patient/{p}/$everything")
        bundle = orjson.loads(body)
        entries = bundle.get("entry", [])
        sizes.append(len(entries))
        includes[p] = [
            f"{e['resource']['resourceType']}/{e['resource']['id']}"
            for e in entries
            if e.get("search", {}).get("mode") == "include"
        ]

    async def server(w: int, i: int) -> int:
        url: str | None = f"/Patient/{pats[i % len(pats)]}/$everything"
        while url:
            status, body = await b.audit.load.get(w, url)
            if status != 200:
                raise loadgen.Failed(f"HTTP {status}")
            url = None
            if b'"next"' in body:  # a record past one page: follow it, like a client must
                links = orjson.loads(body).get("link", [])
                nxt = next((x["url"] for x in links if x.get("relation") == "next"), None)
                url = nxt.split("/fhir", 1)[1] if nxt else None
        return 1

    async def raw(w: int, i: int) -> int:
        p = pats[i % len(pats)]
        await coll.find_one({"_id": f"Patient/{p}"}, {"res": 1, "comp": 1})
        c = coll.find({"comp": f"Patient/{p}"}, {"res": 1, "comp": 1}).sort("_id", ASCENDING)
        _ = [d async for d in c]
        if includes[p]:
            _ = [d async for d in coll.find({"_id": {"$in": includes[p]}}, {"res": 1})]
        return 1

    srv, rside = Side("server"), Side("raw")
    n, c = b.args.n_everything, b.args.concurrency_everything
    await alternate(
        [Contender(rside, raw, n, c), Contender(srv, server, n, c, pid=b.audit.pid)],
        b.args.rounds,
        b.args.warmup,
        b.db_pid,
    )
    return [
        Row(
            "Patient/<id>/$everything",
            "req/s",
            srv,
            rside,
            "raw compartment finds",
            note=f"{statistics.median(sizes):.0f} resources/record (median); " + notes(srv, rside),
        )
    ]


def export_types() -> list[str]:
    """The types of the Synthea load (not AuditEvent, which the run itself keeps writing)."""
    types = set()
    for path in SYNTHEA.glob("*.json.gz"):
        for e in json.loads(gzip.decompress(path.read_bytes()))["entry"]:
            types.add(e["resource"]["resourceType"])
    return sorted(types | {"Appointment"})


async def server_export(srv: Server, types: list[str]) -> tuple[int, float, float, float]:
    """One system-level `$export` through HTTP: (resources, seconds, RSS before, RSS peak)."""
    await srv.login()
    before = srv.rss()
    peak = before
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, srv.rss())
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    t0 = time.perf_counter()
    r = await srv.http.get(
        "/$export", params={"_type": ",".join(types)}, headers={"Prefer": "respond-async"}
    )
    assert r.status_code == 202, r.text
    status_url = r.headers["content-location"]
    while True:
        s = await srv.http.get(status_url)
        if s.status_code == 200:
            break
        assert s.status_code == 202, s.text
        await asyncio.sleep(0.1)
    count = 0
    for out in s.json()["output"]:
        f = await srv.http.get(out["url"])
        assert f.status_code == 200, f.text
        count += f.content.count(b"\n")
    seconds = time.perf_counter() - t0
    done.set()
    await sampler
    await srv.http.delete(status_url)
    return count, seconds, before, peak


async def raw_export(db: AsyncDatabase[Doc], types: list[str]) -> tuple[int, float]:
    """A raw cursor dump of the same resources as NDJSON lines (kept in memory, as the
    server's file is before it is sent)."""
    t0 = time.perf_counter()
    count = 0
    for rt in types:
        buf = bytearray()
        async for d in db.resources.find({"rt": rt}, {"res": 1}).sort("_id", ASCENDING):
            res = d["res"]
            # The resource as stored: a document, or its JSON kept as is (lean storage).
            buf += (res if isinstance(res, bytes) else orjson.dumps(res)) + b"\n"
            count += 1
    return count, time.perf_counter() - t0


async def measure_export(b: Bench) -> list[Row]:
    types = export_types()
    srv, rside = Side("server"), Side("raw")
    peaks, befores, counts = [], [], []
    await server_export(b.audit, types)  # warm-up, excluded
    await raw_export(b.db, types)
    for r in range(b.args.export_runs):
        for which in ("raw", "server") if r % 2 == 0 else ("server", "raw"):
            if which == "raw":
                n, secs = await raw_export(b.db, types)
                rside.add(loadgen.Round([secs], secs, n))
            else:
                n, secs, before, peak = await server_export(b.audit, types)
                srv.add(loadgen.Round([secs], secs, n))
                peaks.append(peak)
                befores.append(before)
                counts.append(n)
            await drain([b.audit.pid, b.db_pid])
    b.export_rss[b.size] = (statistics.median(befores), max(peaks), counts[-1])
    return [
        Row(
            f"$export NDJSON @{b.size:,} ({counts[-1]:,} resources)",
            "res/s",
            srv,
            rside,
            "raw cursor dump",
            ">= 0.80" if b.size >= max(b.args.sizes) else "-",
            note=f"server RSS {statistics.median(befores):.0f} MB before, {max(peaks):.0f} MB peak",
        )
    ]


def export_memory_row(b: Bench) -> Row:
    sizes = sorted(b.export_rss)
    if len(sizes) < 2:
        return na("$export server RSS peak 10x / 1x", "one size only")
    (lo_before, lo_peak, lo_n) = b.export_rss[sizes[0]]
    (hi_before, hi_peak, hi_n) = b.export_rss[sizes[-1]]
    return Row(
        f"$export server RSS peak, {hi_n / lo_n:.1f}x data",
        "MB",
        None,
        None,
        f"peak @{sizes[0]:,}",
        "<= 1.25",
        ratio=hi_peak / lo_peak,
        note=f"{lo_peak:.0f} MB with {lo_n:,} resources, {hi_peak:.0f} MB with {hi_n:,};"
        f" during the export +{lo_peak - lo_before:.0f} MB and +{hi_peak - hi_before:.0f} MB"
        " (the rest of the difference is the run's other work in between)",
    )


def rekeyed(docs: list[Doc], hist: list[Doc]) -> tuple[list[Doc], list[Doc]]:
    """The stored documents under fresh ids (same content, same index entries)."""
    new = {d["_id"]: f"{d['rt']}/{uuid.uuid4()}" for d in docs}
    out, hout = [], []
    for d in docs:
        d = dict(d)
        key = new[d["_id"]]
        if d.get("sk") == d["_id"]:
            d["sk"] = key
        d["_id"], d["id"] = key, key.split("/", 1)[1]
        out.append(d)
    for h in hist:
        h = dict(h)
        key = new[f"{h['rt']}/{h['id']}"]
        if h.get("sk") == f"{h['rt']}/{h['id']}":
            h["sk"] = key
        h["_id"], h["id"] = f"{key}/{h['vid']}", key.split("/", 1)[1]
        hout.append(h)
    return out, hout


async def measure_ingest(b: Bench) -> list[Row]:
    """Synthea transaction Bundles POSTed to the server beside `insert_many` of the same
    stored documents (resources and history), bundle by bundle, alternating."""
    paths = sorted(SYNTHEA.glob("*.json.gz"))[: b.args.ingest_bundles + 1]
    srv, rside = Side("server"), Side("raw")
    for k, path in enumerate(paths):
        body = gzip.decompress(path.read_bytes())
        t0 = time.perf_counter()
        r = await b.open.http.post(
            "", content=body, headers={"Content-Type": "application/fhir+json"}
        )
        secs = time.perf_counter() - t0
        if k == 0 and r.status_code == 503:
            # The warm-up Bundle, after minutes idle: a pooled database connection the peer
            # closed answers 503 once (seen here); the timed Bundles must not meet it.
            r = await b.open.http.post(
                "", content=body, headers={"Content-Type": "application/fhir+json"}
            )
        assert r.status_code == 200, r.text[:2000]
        keys = ["/".join(e["response"]["location"].split("/")[:2]) for e in r.json()["entry"]]
        docs = [d async for d in b.db.resources.find({"_id": {"$in": keys}})]
        hist = [d async for d in b.db.history.find({"_id": {"$in": [f"{x}/1" for x in keys]}})]
        fresh, fresh_hist = rekeyed(docs, hist)
        t1 = time.perf_counter()
        await b.db.resources.insert_many(fresh, ordered=False)
        await b.db.history.insert_many(fresh_hist, ordered=False)
        raw_secs = time.perf_counter() - t1
        if k == 0:
            continue  # the first bundle warms both paths up
        srv.add(loadgen.Round([secs], secs, len(keys)))
        rside.add(loadgen.Round([raw_secs], raw_secs, len(fresh)))
    return [
        Row(
            f"ingest: transaction Bundle x{len(paths) - 1}",
            "res/s",
            srv,
            rside,
            "raw insert_many",
            ">= 0.50",
            note="p50/p99 per Bundle; tokens off (the backend client may only read)",
        )
    ]


# -- the rows, in the order they run at the largest size ---------------------------------
#
# Each entry is (name, measure): `measure(bench)` returns the rows it measured. To use
# another engineer's measurement (bench/search_shapes.py, bench/ingest.py), put an adapter
# returning `Row`s here in place of ours; a measurement that raises prints as "n/a" with
# the reason, so a path that does not exist yet does not stop the run.

Step = Callable[[Bench], Awaitable[list[Row]]]
STEPS: list[tuple[str, Step]] = [
    ("read", measure_read),
    ("search", measure_searches),
    ("proxy", measure_proxy),
    ("everything", measure_everything),
    ("export", measure_export),
    ("ingest", measure_ingest),
]
# The order of the printed table ("portal" and "export memory" are derived rows).
ORDER = [
    "read",
    "search",
    "proxy",
    "portal",
    "everything",
    "export 1x",
    "export",
    "export memory",
    "ingest",
]


async def run_step(b: Bench, name: str, step: Step, t_start: float) -> None:
    try:
        rows = await step(b)
    except Exception as e:  # noqa: BLE001 - one row's failure must not lose the others
        rows = [na(name, f"{type(e).__name__}: {str(e)[:120]}")]
    if name.startswith("portal"):
        b.rows["portal"] = portal_rows(b)
    elif name == "export" or name == "export 1x":
        b.rows[name] = rows
        b.rows["export memory"] = [export_memory_row(b)]
    else:
        b.rows[name] = rows
    print(f"[{time.perf_counter() - t_start:5.0f} s] {name} measured", file=sys.stderr, flush=True)
    if rows:  # as it goes, so a run stopped early still has its figures
        print_table(rows, file=sys.stderr)


# -- output -----------------------------------------------------------------------------


def ms(x: float) -> str:
    return "-" if x != x else f"{x * 1000:.1f}"


def rate(x: float) -> str:
    return "-" if x != x else (f"{x:,.0f}" if x >= 100 else f"{x:,.1f}")


def print_table(rows: list[Row], file: Any = None) -> None:
    head = (
        f"{'path':<44}{'unit':>6}{'srv p50':>9}{'p99':>9}{'rate':>8}"
        f"{'raw p50':>9}{'p99':>9}{'rate':>8}{'ratio':>7}  {'vs':<22}{'goal':>8}  verdict  note"
    )
    print(head, file=file)
    print("-" * len(head), file=file)
    for r in rows:
        v = r.value()
        a, b = r.a, r.b
        no_rate = r.unit in ("ms", "MB") or a is None
        cells = (
            f"{ms(a.p(0.5)) if a else '-':>9}{ms(a.p(0.99)) if a else '-':>9}"
            f"{rate(a.rate) if a and not no_rate else '-':>8}"
            f"{ms(b.p(0.5)) if b else '-':>9}{ms(b.p(0.99)) if b else '-':>9}"
            f"{rate(b.rate) if b and not no_rate else '-':>8}"
        )
        ratio = "n/a" if v is None else f"{v:.2f}"
        errs = Counter[str]()
        for s in (a, b):
            if s:
                errs.update(s.errors)
        note = r.note + (f"; errors {dict(errs)}" if errs else "")
        print(
            f"{r.path:<44}{r.unit:>6}{cells}{ratio:>7}  {r.vs:<22}{r.goal:>8}  "
            f"{r.verdict():<8} {note}",
            file=file,
        )


async def bench(args: argparse.Namespace, uri: str, workdir: Path, db_pid: int | None) -> None:
    database = f"bench_{uuid.uuid4().hex[:8]}"
    # Long socket reads: a batch of 1,000 inserts can take over 30 s on a busy machine.
    client: AsyncMongoClient[Doc] = open_client(uri, timeout_ms=30000, socket_timeout_ms=600_000)
    db = client[database]
    registry = Registry.load_default()

    def indexer(resource: Doc) -> tuple[Doc, list[str]]:
        return index_entries(resource, registry), compartments(resource, registry)

    await ensure_indexes(db, index_models())
    pop = Population(load_templates(), registry, ResourceStore(db, indexer))
    stats = LoadStats()
    workers = max(args.concurrency, args.concurrency_everything)
    t_start = time.perf_counter()
    servers: list[Server] = []
    try:
        # The first server seeds the empty database (clients, logins, population); the
        # others start on it once it is ready.
        audit = await open_server(
            "audit", uri, database, workdir, {"AUTH_REQUIRED": "1", "AUTO_SEED": "1"}, workers
        )
        servers.append(audit)
        noaudit = await open_server(
            "noaudit",
            uri,
            database,
            workdir,
            {"AUTH_REQUIRED": "1", "AUTO_SEED": "0", "AUDIT": "0"},
            workers,
        )
        servers.append(noaudit)
        opened = await open_server("open", uri, database, workdir, {}, workers)
        servers.append(opened)
        b = Bench(args, db, registry, pop, stats, audit, noaudit, opened, db_pid)
        kind = "MONGODB_URI" if os.environ.get("MONGODB_URI") else "SecantusDB (standalone, disk)"
        print(
            f"database: {kind}; 3 fhir-server processes; n={args.n} x {args.rounds} rounds at "
            f"{args.concurrency} connections; sizes {args.sizes}; today={pop.today}",
            flush=True,
        )
        only = set(args.only or [])
        small = max(args.sizes) // 10
        stages = sorted({small, *args.sizes}) if not only else [max(args.sizes)]
        for stage in stages:
            t0 = time.perf_counter()
            await grow(db, pop, stage, stats)
            print(
                f"[{time.perf_counter() - t_start:5.0f} s] store at {stats.docs:,} Synthea "
                f"resources (+ history; load {time.perf_counter() - t0:.0f} s, "
                f"{stats.rate:,.0f}/s overall)",
                file=sys.stderr,
                flush=True,
            )
            if stage == small and not only:
                await run_step(b, "export 1x", measure_export, t_start)
            if stage in args.sizes and (not only or "portal" in only):
                await run_step(b, f"portal @{stage:,}", measure_portal, t_start)
            if stage == stages[-1]:
                for name, step in STEPS:
                    if not only or name in only:
                        await run_step(b, name, step, t_start)
        rows = [row for name in ORDER for row in b.rows.get(name, [])]
        print(
            f"\n== one run, one database: {stats.docs:,} Synthea resources (+ history, the seed"
            f" population and the run's AuditEvents); {time.perf_counter() - t_start:.0f} s"
        )
        print(
            "ratio = server rate / raw rate (growth rows: p50 at the largest size / the"
            " smallest; memory: RSS peak at 10x / 1x); latencies in ms"
        )
        print_table(rows)
        cpu = {s.name: cpu_seconds(s.proc.pid) for s in servers}
        if db_pid:
            cpu["database"] = cpu_seconds(db_pid)
        print("CPU seconds over the run: " + ", ".join(f"{k} {v:.0f}" for k, v in cpu.items()))
    finally:
        for s in servers:
            s.load.close()
            await s.http.aclose()
            if s.proc.poll() is None:
                s.proc.terminate()
        for s in servers:
            with contextlib.suppress(Exception):
                s.proc.wait(timeout=60)
        if os.environ.get("MONGODB_URI"):  # the embedded one's files go with its directory
            with contextlib.suppress(PyMongoError):
                await client.drop_database(database)
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes",
        default="2500,10000",
        help="store sizes (Synthea resources) for the portal queries; the other rows run at"
        " the largest and $export also at a tenth of it (the issue's: 10000,40000)",
    )
    parser.add_argument("--n", type=int, default=300, help="requests per round and side")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=50, help="requests of the warm-up round")
    parser.add_argument("--concurrency", type=int, default=16, help="connections per side")
    parser.add_argument("--samples", type=int, default=32, help="portal queries per size")
    parser.add_argument("--n-everything", type=int, default=32)
    parser.add_argument("--concurrency-everything", type=int, default=4)
    parser.add_argument("--export-runs", type=int, default=2, help="timed exports per size")
    parser.add_argument("--ingest-bundles", type=int, default=3, help="timed Bundles")
    parser.add_argument("--log-dir", type=Path, help="keep the servers' and database's logs")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        help="run only these steps (repeatable or comma-separated: "
        + ",".join([n for n, _ in STEPS] + ["portal"])
        + "), at the largest size alone; default every one",
    )
    parser.add_argument(
        "--server-path", default="", help="run the servers from another checkout (PYTHONPATH)"
    )
    args = parser.parse_args()
    args.sizes = sorted(int(s.replace("_", "")) for s in args.sizes.split(",") if s)
    args.only = {s for v in args.only for s in v.split(",") if s}
    unknown = args.only - {n for n, _ in STEPS} - {"portal"}
    if unknown:
        parser.error(f"unknown --only steps: {', '.join(sorted(unknown))}")
    if args.server_path:
        SERVER_ENV["PYTHONPATH"] = args.server_path
    with tempfile.TemporaryDirectory() as tmp:
        work = args.log_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        uri = os.environ.get("MONGODB_URI")
        secantus = None
        if not uri:
            secantus, uri = start_secantus(work / "db", memory=False)
        try:
            asyncio.run(bench(args, uri, work, secantus.pid if secantus else None))
        finally:
            if secantus:
                # Its files are thrown away: no need to wait for a clean shutdown.
                secantus.kill()
                secantus.wait(timeout=60)


if __name__ == "__main__":
    main()
