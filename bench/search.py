"""Portal searches through HTTP beside the raw driver running the same query, at several sizes.

    python -m bench.search [--sizes 10000,100000] [--samples 30] [--budget 40]

Starts a database (SecantusDB standalone, on disk in a temporary directory, or MONGODB_URI),
loads it directly with the raw driver and a real `fhir-server serve` process reads it.
Measured, in one run:

- four typical portal queries, for the same patients at every size:
    lab Observations  Observation?patient=X&category=laboratory&_sort=-date&_count=50
    DiagnosticReport  DiagnosticReport?patient=Patient/X&_include=DiagnosticReport:result
    active meds       MedicationRequest?subject=Patient/X&status=active
    upcoming appts    Appointment?patient=Patient/X&date=ge<today>
- each through HTTP (GET on the server, response read in full) and through the raw driver
  doing the same database work as `execute.run_search`: the filter built by the project's
  own code (`parse_search` + `execute.search_filter`, with its implied `comp` clause),
  shaped by `execute.plan`, the sort of `execute.sort_keys`, `find(...).sort(...).limit(count + 1)`,
  `count_documents` when there is a next page (the first page's total), and the
  `_id: {$in: ...}` include query. The filter is built outside the timed part: it is
  the server's CPU, not database work;
- p50 / p95 latency of both sides (sequential requests, one at a time), the p50 ratio
  server / raw and how p50 grows from the smallest to the largest size (goal: flat within
  1.5x), with the planner's facts (stages, index, keys and documents examined) from
  `explain` for one patient (on SecantusDB also what its `find` really executes, which its
  explain does not say), and the raw time of the same query as the server shaped it before
  (no implied `comp`, `rt` first, and its old SecantusDB hint);
- how long loading takes (documents/s), the database's memory, and what 1,000,000
  resources would cost at that rate.

The population is the 16 Synthea bundles of tests/data/synthea-r4 (3,507 resources) copied
with fresh ids (references rewritten per copy, as a transaction's `urn:uuid` resolution
does), plus 6 Appointments per patient (3 past, 3 upcoming: Synthea writes none). Every
resource is stored as the server stores it (`ResourceStore._document`: `res` with meta,
`ix`, `comp`, `sk`, version 1) with its `history` version, in batches of 1,000
(`insert_many`), on the indexes the server creates at start-up (`ensure_indexes`).
Progress goes to stderr every 5,000 resources, so a run stopped early still tells how far
and how fast it loaded.
The store grows from one size to the next; the queried patients are those of the first
copy, so every size answers the same rows and only the store around them grows.
The server runs with AUTH_REQUIRED=0 (no token checks) and its default 5 s query budget:
a query past it answers 503 and is counted as an error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from pymongo import AsyncMongoClient, MongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure, PyMongoError

from bench.crud import start_server
from fhir_server.db.client import ensure_indexes, open_client
from fhir_server.db.embedded import free_port, uri_for
from fhir_server.search.execute import (
    include_targets,
    plan,
    search_filter,
    sort_keys,
    uses_elem_match,
)
from fhir_server.search.extract import compartments, index_entries
from fhir_server.search.indexes import index_models
from fhir_server.search.parse import SearchRequest, parse_search
from fhir_server.search.registry import Registry
from fhir_server.storage.store import ResourceStore

Doc = dict[str, Any]
SYNTHEA = Path(__file__).resolve().parent.parent / "tests" / "data" / "synthea-r4"
URN = re.compile(rb"urn:uuid:([0-9a-f-]{36})")
BATCH = 1000
PROGRESS = 5000  # a progress line on stderr every so many resources loaded
MAX_TIME_MS = 5000  # the server's query_max_time_ms default
APPOINTMENT_DAYS = (-400, -60, -7, 3, 30, 120)  # relative to today; 3 upcoming


# -- population -------------------------------------------------------------------------


@dataclass
class Template:
    """One Synthea patient bundle, ready to be copied with fresh ids."""

    name: str
    text: bytes  # JSON list of the bundle's resources
    ids: list[tuple[str, str]]  # (resourceType, uuid) of each resource, in order
    patient: str  # the patient's uuid
    practitioner: str | None


def load_templates() -> list[Template]:
    out = []
    for path in sorted(SYNTHEA.glob("*.json.gz")):
        bundle = json.loads(gzip.decompress(path.read_bytes()))
        resources = [e["resource"] for e in bundle["entry"]]
        ids = [(r["resourceType"], r["id"]) for r in resources]
        patient = next(i for t, i in ids if t == "Patient")
        practitioner = next((i for t, i in ids if t == "Practitioner"), None)
        out.append(
            Template(path.name.split("_")[0], orjson.dumps(resources), ids, patient, practitioner)
        )
    return out


def appointments(patient: str, practitioner: str | None, today: date) -> list[Doc]:
    out = []
    for days in APPOINTMENT_DAYS:
        start = datetime.combine(today + timedelta(days=days), datetime.min.time(), UTC)
        start += timedelta(hours=9)
        participants = [{"actor": {"reference": patient}, "status": "accepted"}]
        if practitioner:
            participants.append({"actor": {"reference": practitioner}, "status": "accepted"})
        out.append(
            {
                "resourceType": "Appointment",
                "id": str(uuid.uuid4()),
                "status": "booked" if days >= 0 else "fulfilled",
                "serviceType": [
                    {"coding": [{"system": "http://snomed.info/sct", "code": "394814009"}]}
                ],
                "start": start.isoformat().replace("+00:00", "Z"),
                "end": (start + timedelta(minutes=30)).isoformat().replace("+00:00", "Z"),
                "participant": participants,
            }
        )
    return out


class Population:
    """Copies of the Synthea bundles as the documents the server would have written."""

    def __init__(self, templates: list[Template], registry: Registry, store: ResourceStore):
        self.templates = templates
        self.registry = registry
        self.store = store
        self.next = 0  # bundles copied so far
        self.patients: list[tuple[str, str]] = []  # (template name, patient id) of copy 0
        self.today = date.today()

    def copy(self) -> tuple[list[Doc], list[Doc]]:
        """The next bundle copy: (current documents, history documents). CPU only."""
        t = self.templates[self.next % len(self.templates)]
        self.next += 1
        refs = {u: f"{rt}/{uuid.uuid4()}" for rt, u in t.ids}
        resources = orjson.loads(URN.sub(lambda m: refs[m.group(1).decode()].encode(), t.text))
        for r, (_, u) in zip(resources, t.ids, strict=True):
            r["id"] = refs[u].split("/", 1)[1]
        patient = refs[t.patient]
        if self.next <= len(self.templates):
            self.patients.append((t.name, patient.split("/", 1)[1]))
        practitioner = refs[t.practitioner] if t.practitioner else None
        resources += appointments(patient, practitioner, self.today)
        docs, hist = [], []
        for r in resources:
            doc = self.store.document(r["resourceType"], r["id"], 1, r)
            h = {k: doc[k] for k in ("rt", "id", "vid", "lu", "comp", "sk", "res")}
            h["_id"] = f"{doc['_id']}/1"
            h["method"] = "POST"
            docs.append(doc)
            hist.append(h)
        return docs, hist


@dataclass
class LoadStats:
    docs: int = 0  # current documents written (history writes the same number again)
    written: int = 0  # acknowledged so far (for a failure report)
    seconds: float = 0.0
    prep_cpu: float = 0.0  # extraction + document building, this process

    @property
    def rate(self) -> float:
        return self.docs / self.seconds if self.seconds else 0.0


async def grow(db: AsyncDatabase[Doc], pop: Population, target: int, stats: LoadStats) -> None:
    """Add whole bundle copies until `resources` holds at least `target` documents.
    Building the next batch (in a thread) overlaps the insert of the previous one."""
    pending: asyncio.Task[Any] | None = None
    buf: list[Doc] = []
    hbuf: list[Doc] = []

    def prepare() -> tuple[list[Doc], list[Doc], float]:
        c0 = time.thread_time()
        docs, hist = pop.copy()
        return docs, hist, time.thread_time() - c0

    async def insert(docs: list[Doc], hist: list[Doc]) -> None:
        await db.resources.insert_many(docs, ordered=False)
        await db.history.insert_many(hist, ordered=False)
        stats.written += len(docs)
        if stats.written // PROGRESS != (stats.written - len(docs)) // PROGRESS:
            spent = stats.seconds + time.perf_counter() - start
            print(
                f"  loaded {stats.written:,} resources in {spent:.0f} s"
                f" ({stats.written / spent:,.0f}/s)",
                file=sys.stderr,
                flush=True,
            )

    start = time.perf_counter()
    have = stats.docs
    while have < target or buf:
        if have < target:
            docs, hist, cpu = await asyncio.to_thread(prepare)
            stats.prep_cpu += cpu
            buf += docs
            hbuf += hist
            have += len(docs)
        while len(buf) >= BATCH or (buf and have >= target):
            if pending is not None:
                await pending
            pending = asyncio.create_task(insert(buf[:BATCH], hbuf[:BATCH]))
            buf, hbuf = buf[BATCH:], hbuf[BATCH:]
    if pending is not None:
        await pending
    stats.docs = have
    stats.seconds += time.perf_counter() - start


# -- queries ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    name: str
    rt: str
    params: Callable[[str, date], list[tuple[str, str]]]


QUERIES = [
    Query(
        "lab Observations -date",
        "Observation",
        lambda p, _: [
            ("patient", p),
            ("category", "laboratory"),
            ("_sort", "-date"),
            ("_count", "50"),
        ],
    ),
    Query(
        "DiagnosticReport+result",
        "DiagnosticReport",
        lambda p, _: [("patient", f"Patient/{p}"), ("_include", "DiagnosticReport:result")],
    ),
    Query(
        "active MedicationRequest",
        "MedicationRequest",
        lambda p, _: [("subject", f"Patient/{p}"), ("status", "active")],
    ),
    Query(
        "upcoming Appointments",
        "Appointment",
        lambda p, d: [("patient", f"Patient/{p}"), ("date", f"ge{d.isoformat()}")],
    ),
]


@dataclass
class RawPlan:
    """The database work of one `run_search` call, precomputed like the server's filter."""

    req: SearchRequest
    filt: Doc
    hint: str | None
    sort: list[tuple[str, int]]
    projection: Doc
    built: Doc  # the filter before `plan` (field order as built, implied `comp` included)


async def raw_plan(
    db: AsyncDatabase[Doc], registry: Registry, rt: str, params: list[tuple[str, str]]
) -> RawPlan:
    req = parse_search(rt, params, registry)
    built = await search_filter(db, registry, req)
    filt, hint = plan(built, not await uses_elem_match(db))
    proj: Doc = {"res": 1, "lu": 1, "ix.o": 1}
    if req.includes:
        proj["ix.k"] = 1
    return RawPlan(req, filt, hint, sort_keys(req), proj, built)


@dataclass
class Answer:
    matches: int
    included: int
    total: int | None


async def raw_search(coll: AsyncCollection[Doc], registry: Registry, p: RawPlan) -> Answer:
    """What `run_search` asks the database, with the same filter, hint, sort and limit."""
    c = coll.find(p.filt, p.projection, max_time_ms=MAX_TIME_MS).sort(p.sort).limit(p.req.count + 1)
    if p.hint:
        c = c.hint(p.hint)
    docs = [d async for d in c]
    more = len(docs) > p.req.count
    docs = docs[: p.req.count]
    total = len(docs)
    if more:
        kw: Doc = {"maxTimeMS": MAX_TIME_MS}
        if p.hint:
            kw["hint"] = p.hint
        total = await coll.count_documents(p.filt, **kw)
    included = 0
    if p.req.includes:
        seen = {d["_id"] for d in docs}
        ids = [t for d in docs for i in p.req.includes for t in include_targets(registry, d, i)]
        ids = [i for i in dict.fromkeys(ids) if i not in seen]
        by_type: dict[str, list[str]] = {}
        for i in ids:
            by_type.setdefault(i.split("/", 1)[0], []).append(i)
        for group in by_type.values():
            c = coll.find({"_id": {"$in": group}}, {"res": 1, "ix.k": 1}, max_time_ms=MAX_TIME_MS)
            included += len([d async for d in c.limit(1001)])
    return Answer(len(docs), included, total)


def bundle_answer(body: bytes) -> Answer:
    b = orjson.loads(body)
    modes = Counter(e.get("search", {}).get("mode") for e in b.get("entry", []))
    return Answer(modes["match"], modes["include"], b.get("total"))


def percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


@dataclass
class Result:
    query: str
    size: int
    http: list[float] = field(default_factory=list)  # seconds
    raw: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    mismatches: int = 0
    rows: list[int] = field(default_factory=list)  # matches + included per sample
    explain: str = ""
    alternatives: str = ""


RANGE_FIELDS = ("ix.lo", "ix.hi", "ix.s")


def old_hint(filt: Doc) -> str | None:
    """The SecantusDB hint `execute.plan` gave before it reordered filters instead: the
    `(rt, ix.k)` index when there was a key equality, else the first range field's index."""
    ranged = [f for f in RANGE_FIELDS if isinstance(filt.get(f), dict) and "$elemMatch" in filt[f]]
    if not ranged:
        return None
    k = filt.get("ix.k")
    if isinstance(k, str) or (isinstance(k, dict) and "$all" in k):
        return "rt_ix_k"
    return "rt_" + ranged[0].replace(".", "_")


def alternatives(p: RawPlan, secantus: bool) -> list[tuple[str, Doc, str | None]]:
    """Other shapes of the same query, timed raw to show what the plan is worth: the filter
    as the server built it before this plan (no implied `comp`, `rt` first), with the hint
    it had then on SecantusDB, and the built filter in its built order (`rt` first)."""
    out: list[tuple[str, Doc, str | None]] = []
    before = {k: v for k, v in p.built.items() if k != "comp"}
    if before != p.filt or list(before) != list(p.filt):
        out.append(("no comp, rt first", before, None))
    hint = old_hint(before) if secantus else None
    if hint:
        out.append((f"no comp, hint {hint}", before, hint))
    if "comp" in p.built and list(p.built) != list(p.filt):
        out.append(("comp, rt first", p.built, None))
    return out


async def time_alternatives(coll: AsyncCollection[Doc], p: RawPlan, secantus: bool) -> str:
    """Median of 3 runs of each alternative shape (find + sort + limit only)."""
    out = []
    for label, filt, hint in alternatives(p, secantus):
        times = []
        n = 0
        try:
            for _ in range(3):
                c = coll.find(filt, p.projection, max_time_ms=MAX_TIME_MS)
                c = c.sort(p.sort).limit(p.req.count + 1)
                if hint:
                    c = c.hint(hint)
                t0 = time.perf_counter()
                n = len([d async for d in c])
                times.append(time.perf_counter() - t0)
        except PyMongoError as e:
            out.append(f"{label}: failed ({type(e).__name__}, budget {MAX_TIME_MS} ms)")
            continue
        out.append(f"{label}: {ms(statistics.median(times))} ms ({n} rows)")
    return "; ".join(out)


def summarise_explain(doc: Any) -> str:
    """Stages, index names, keys and documents examined, from any explain output."""
    stages: list[str] = []
    indexes: list[str] = []
    stats: dict[str, int] = {}

    def walk(x: Any) -> None:
        if isinstance(x, dict):
            for k, v in x.items():
                if k == "stage" and isinstance(v, str) and v not in stages:
                    stages.append(v)
                elif k == "indexName" and isinstance(v, str) and v not in indexes:
                    indexes.append(v)
                elif k in ("totalKeysExamined", "totalDocsExamined", "nReturned") and isinstance(
                    v, int
                ):
                    stats.setdefault(k, v)
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(doc)
    out = ">".join(stages) or "?"
    if indexes:
        out += f" [{','.join(indexes)}]"
    if stats:
        out += (
            f" keys={stats.get('totalKeysExamined', '?')} docs={stats.get('totalDocsExamined', '?')}"
            f" n={stats.get('nReturned', '?')}"
        )
    return out


async def explain(db: AsyncDatabase[Doc], p: RawPlan) -> str:
    cmd: Doc = {
        "find": "resources",
        "filter": p.filt,
        "sort": dict(p.sort),
        "limit": p.req.count + 1,
    }
    if p.hint:
        cmd["hint"] = p.hint
    try:
        out = await db.command({"explain": cmd, "verbosity": "executionStats"})
    except Exception as e:  # noqa: BLE001 - a database without executionStats
        c = db.resources.find(p.filt).sort(p.sort).limit(p.req.count + 1)
        if p.hint:
            c = c.hint(p.hint)
        try:
            out = await c.explain()
        except Exception:  # noqa: BLE001
            return f"explain failed: {e}"
    if not await uses_elem_match(db):
        # SecantusDB's explain reports COLLSCAN for filters that it still serves from an
        # index (one clause looked up, the rest checked per document): say which.
        return f"explain: {summarise_explain(out)}; executes: {await secantus_access(db, p.filt)}"
    return summarise_explain(out)


async def secantus_access(db: AsyncDatabase[Doc], filt: Doc) -> str:
    """What SecantusDB 0.7.0b3's `find` executes (docs/database.md): the whole filter on an
    index when its planner can bound it, else the index lookup of the first top-level clause
    that one can bound alone (found the same way, by explaining that clause alone), else a
    collection scan. A top-level `$and`/`$or` is always scanned."""

    async def index_of(f: Doc) -> str | None:
        out = await db.resources.find(f).explain()
        names = re.findall(r"'indexName': '([^']+)'", str(out))
        return names[0] if names else None

    whole = await index_of(filt)
    if whole:
        return f"IXSCAN {whole} (whole filter)"
    if any(k.startswith("$") for k in filt):
        return "COLLSCAN (top-level operator)"
    for k, v in filt.items():
        name = await index_of({k: v})
        if name:
            return f"IXSCAN {name} by {k} only, rest per document"
    return "COLLSCAN"


async def measure(
    http: httpx.AsyncClient,
    db: AsyncDatabase[Doc],
    registry: Registry,
    q: Query,
    patients: list[tuple[str, str]],
    size: int,
    today: date,
    samples: int,
    budget: float,
) -> Result:
    res = Result(q.name, size)
    plans = [await raw_plan(db, registry, q.rt, q.params(pid, today)) for _, pid in patients]
    # Warm up both paths once (first-use costs: evaluator compilation, connections).
    await http.get(f"/{q.rt}", params=q.params(patients[0][1], today))
    await raw_search(db.resources, registry, plans[0])
    deadline = time.perf_counter() + budget
    rows_of: dict[int, int] = {}
    i = 0
    while i < samples and (i < 3 or time.perf_counter() < deadline):
        k = i % len(patients)
        params = q.params(patients[k][1], today)
        t0 = time.perf_counter()
        r = await http.get(f"/{q.rt}", params=params)
        t1 = time.perf_counter()
        try:
            answer = await raw_search(db.resources, registry, plans[k])
        except Exception as e:  # noqa: BLE001 - reported, not fatal
            res.errors[f"raw {type(e).__name__}"] += 1
            i += 1
            continue
        t2 = time.perf_counter()
        if r.status_code != 200:
            res.errors[f"HTTP {r.status_code}"] += 1
        else:
            res.http.append(t1 - t0)
            if bundle_answer(r.content) != answer:
                res.mismatches += 1
        res.raw.append(t2 - t1)
        res.rows.append(answer.matches + answer.included)
        rows_of[k] = answer.matches + answer.included
        i += 1
    # Planner facts for the patient with the most rows.
    big = max(range(len(patients)), key=lambda j: rows_of.get(j, 0))
    res.explain = f"{patients[big][0]}: " + await explain(db, plans[big])
    res.alternatives = await time_alternatives(
        db.resources, plans[big], not await uses_elem_match(db)
    )
    return res


# -- server and reporting ---------------------------------------------------------------


def rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def ms(x: float) -> str:
    return f"{x * 1000:.1f}"


def print_size(results: list[Result], size: int, stats: LoadStats, mem: float | None) -> None:
    print(
        f"\n== {size:,} resources (+{size:,} history): loaded at {stats.rate:,.0f} resources/s"
        f" ({stats.seconds:.0f} s so far, extraction CPU {stats.prep_cpu:.0f} s)"
        + (f", database RSS {mem:,.0f} MB" if mem else "")
    )
    print(
        f"{'query':<26}{'n':>4}{'rows':>6}{'server p50':>11}{'p95':>8}{'raw p50':>9}{'p95':>8}"
        f"{'p50 ratio':>10}{'srv/s':>7}{'raw/s':>7}  errors"
    )
    for r in results:
        if not r.http or not r.raw:
            print(f"{r.query:<26}{len(r.raw):>4}  no successful samples; errors {dict(r.errors)}")
            continue
        hp50, rp50 = percentile(r.http, 0.5), percentile(r.raw, 0.5)
        err = ", ".join(f"{k} x{v}" for k, v in r.errors.items())
        if r.mismatches:
            err += f" answers differ x{r.mismatches}"
        print(
            f"{r.query:<26}{len(r.http):>4}{statistics.median(r.rows):>6.0f}{ms(hp50):>11}"
            f"{ms(percentile(r.http, 0.95)):>8}{ms(rp50):>9}{ms(percentile(r.raw, 0.95)):>8}"
            f"{hp50 / rp50:>10.2f}{1 / statistics.mean(r.http):>7.1f}"
            f"{1 / statistics.mean(r.raw):>7.1f}  {err or '-'}"
        )
    print("planner (explain executionStats of the raw query, patient with the most rows):")
    for r in results:
        print(f"  {r.query:<26}{r.explain}")
        if r.alternatives:
            print(f"  {'':<26}raw p50 of other shapes: {r.alternatives}")


def print_summary(
    all_results: dict[int, list[Result]], stats: LoadStats, mem: float | None
) -> None:
    sizes = sorted(all_results)
    print("\n== p50 latency (ms) by store size; growth = largest / smallest (goal <= 1.5)")
    head = "".join(f"{f'srv@{s:,}':>14}" for s in sizes) + "".join(
        f"{f'raw@{s:,}':>14}" for s in sizes
    )
    print(f"{'query':<26}{head}{'srv growth':>12}{'raw growth':>12}  verdict")
    for i, q in enumerate(QUERIES):
        rs = [all_results[s][i] for s in sizes]
        hp = [percentile(r.http, 0.5) if r.http else float("nan") for r in rs]
        rp = [percentile(r.raw, 0.5) if r.raw else float("nan") for r in rs]
        hg, rg = hp[-1] / hp[0], rp[-1] / rp[0]
        verdict = "flat" if hg <= 1.5 else "NOT flat"
        if any(r.errors for r in rs):
            verdict += " (errors)"
        cells = "".join(f"{ms(x):>14}" for x in hp) + "".join(f"{ms(x):>14}" for x in rp)
        print(f"{q.name:<26}{cells}{hg:>12.2f}{rg:>12.2f}  {verdict}")
    if stats.rate:
        million = 1_000_000 / stats.rate
        print(
            f"\nLoading: {stats.docs:,} resources (+ as many history versions) in {stats.seconds:.0f} s"
            f" = {stats.rate:,.0f} resources/s; 1,000,000 would take about {million / 60:.0f} min"
            + (
                f" and about {mem / stats.docs * 1_000_000 / 1024:,.1f} GB of database memory"
                f" (now {mem:,.0f} MB)"
                if mem
                else ""
            )
            + "."
        )


async def bench(
    uri: str, sizes: list[int], samples: int, budget: float, log: Path, db_pid: int | None
) -> None:
    database = f"bench_{uuid.uuid4().hex[:8]}"
    client: AsyncMongoClient[Doc] = open_client(uri, timeout_ms=30000)
    db = client[database]
    registry = Registry.load_default()

    def indexer(resource: Doc) -> tuple[Doc, list[str]]:
        return index_entries(resource, registry), compartments(resource, registry)

    await ensure_indexes(db, index_models())  # what the server's lifespan creates
    pop = Population(load_templates(), registry, ResourceStore(db, indexer))
    proc, base = start_server(uri, database, log)
    stats = LoadStats()
    all_results: dict[int, list[Result]] = {}
    kind = "MONGODB_URI" if os.environ.get("MONGODB_URI") else "SecantusDB (embedded)"
    print(f"database: {kind}; server: fhir-server serve, AUTH_REQUIRED=0; today={pop.today}")
    mem: float | None = None
    try:
        async with httpx.AsyncClient(base_url=base, timeout=120) as http:
            for size in sizes:
                await grow(db, pop, size, stats)
                mem = rss_mb(db_pid)
                if size == sizes[0]:
                    print(
                        "queries (filter built by parse_search + search_filter + plan, as the server does):"
                    )
                    for q in QUERIES:
                        p = await raw_plan(
                            db, registry, q.rt, q.params(pop.patients[0][1], pop.today)
                        )
                        print(
                            f"  {q.name}: GET /fhir/{q.rt}?{httpx.QueryParams(q.params('X', pop.today))}"
                        )
                        print(
                            f"    find({json.dumps(p.filt)}).sort({p.sort}).limit({p.req.count + 1})"
                            f"{f'.hint({p.hint!r})' if p.hint else ''}"
                            " [+ count_documents when a next page exists]"
                            + (
                                " [+ find({_id: {$in: result ids}}) for _include]"
                                if p.req.includes
                                else ""
                            )
                        )
                results = []
                for q in QUERIES:
                    results.append(
                        await measure(
                            http,
                            db,
                            registry,
                            q,
                            pop.patients,
                            stats.docs,
                            pop.today,
                            samples,
                            budget,
                        )
                    )
                all_results[stats.docs] = results
                print_size(results, stats.docs, stats, mem)
                sys.stdout.flush()
        print_summary(all_results, stats, mem)
    except httpx.HTTPError:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])  # noqa: ASYNC240
        print(f"server exit code {proc.poll()}; last lines of {log}:\n{tail}", file=sys.stderr)
        raise
    except OperationFailure as e:
        print(f"database error after {stats.written:,} resources loaded: {e}", file=sys.stderr)
        raise
    finally:
        with contextlib.suppress(PyMongoError):
            await client.drop_database(database)
        await client.close()
        proc.terminate()
        proc.wait(timeout=30)


def start_secantus(path: Path, memory: bool) -> tuple[subprocess.Popen[bytes], str]:
    """SecantusDB for loading in bulk: as the server's embedded database, but standalone (no
    replica set, so no oplog). With an oplog every 1,000th write runs a prune check that opens
    all 17 oplog tables and steps each to its first row; past about 10,000 resources
    (+ history) that check took 80-100% of the insert time (py-spy), with or without
    `--oplog-max-entries`. The benchmark's server only reads, so it needs no transactions."""
    path.mkdir(parents=True, exist_ok=True)
    port = free_port()
    exe = Path(sys.executable).parent / "secantusd-py"
    cmd = [str(exe), "--host", "127.0.0.1", "--port", str(port), "--log-level", "WARNING"]
    cmd += ["--storage-path", ":memory:" if memory else str(path)]
    # A 4 GB cache (default 1 GB) keeps the indexes of 100,000+ resources in memory.
    cmd += ["--standalone", "--cache-size", "4G"]
    with (path / "secantus.log").open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    uri = uri_for(port)
    for _ in range(300):
        if proc.poll() is not None:
            break
        with contextlib.suppress(PyMongoError):
            c: MongoClient[Doc] = MongoClient(uri, serverSelectionTimeoutMS=500)
            with c:
                c.admin.command("ping")
            return proc, uri
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"SecantusDB did not start; see {path / 'secantus.log'}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes",
        default="10000,100000",
        help="store sizes in resources, comma separated (e.g. 10000,100000,1000000)",
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=32,
        help="timed requests per query and size (cycling over 16 patients)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=40.0,
        help="seconds per query and size after which sampling stops (at least 3 samples)",
    )
    parser.add_argument(
        "--log-dir", type=Path, help="keep the server's and the database's logs in this directory"
    )
    parser.add_argument(
        "--memory", action="store_true", help="SecantusDB in memory (fails past ~20,000 resources)"
    )
    args = parser.parse_args()
    sizes = sorted(int(s.replace("_", "")) for s in args.sizes.split(",") if s)
    with tempfile.TemporaryDirectory() as tmp:
        uri = os.environ.get("MONGODB_URI")
        secantus = None
        if not uri:
            # On disk in a temporary directory: in memory, SecantusDB keeps everything in its
            # 1 GB WiredTiger cache and fails with WT_CACHE_FULL at about 20,000 resources
            # (+ history) on these indexes.
            secantus, uri = start_secantus((args.log_dir or Path(tmp)) / "db", args.memory)
        pid = secantus.pid if secantus else None
        try:
            log = (args.log_dir or Path(tmp)) / "server.log"
            asyncio.run(bench(uri, sizes, args.samples, args.budget, log, pid))
        finally:
            if secantus:
                secantus.terminate()
                secantus.wait(timeout=120)


if __name__ == "__main__":
    main()
