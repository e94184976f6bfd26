"""Running one export: narrowed queries per type, post-checked resources, ndjson files.

Each type is read from one cursor per window of `WINDOW` rows (`_id` after the last one,
each query with `maxTimeMS`), `BATCH` rows per round trip, so the server holds one batch,
never a type, and no single query on MongoDB runs long. On SecantusDB, which reads every
candidate of a query before it applies the limit (docs/database.md), the window is the
whole type: one query per type, the database's cost of a raw cursor dump. Every query ANDs
in the request's access policy (`AccessPolicy.type_filter`), every resource passes the
post-check (`screen`) before it is written: an export shows exactly what a search by the
same token would. Output is split per type, and into a further file past `FILE_BYTES`.
Bulk Data Access IG 2.0.0: https://hl7.org/fhir/uv/bulkdata/export.html
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import bson
import orjson
from bson.raw_bson import RawBSONDocument
from pymongo import ASCENDING

from fhir_server.access.policy import AccessPolicy
from fhir_server.access.screen import screen
from fhir_server.errors import Issue, operation_outcome
from fhir_server.exchange.bulk_params import ExportSpec
from fhir_server.exchange.bulk_store import CHUNK_BYTES, JobStore
from fhir_server.search import secantus_plan
from fhir_server.search.execute import uses_elem_match
from fhir_server.search.query import NOTHING, all_of
from fhir_server.search.summary import apply
from fhir_server.storage.store import ResourceStore

Doc = dict[str, Any]
log = logging.getLogger("fhir_server.exchange")

# Rows per round trip; the job's heartbeat (and a cancel check) runs between batches.
BATCH = 500
# Rows per query on MongoDB, whose `(rt, _id)` index bounds a window to its own rows.
WINDOW = 20_000
ID_ORDER = [("_id", ASCENDING)]
# A file past this size is closed and the type continues in the next file.
FILE_BYTES = 16 << 20


class Cancelled(Exception):
    """The job was deleted while it ran."""


@dataclass
class Job:
    """What the task needs about its job; the policy is kept here, never stored."""

    id: str
    worker: str
    spec: ExportSpec
    policy: AccessPolicy
    types: tuple[str, ...]
    # Patient compartments a Patient/Group export is confined to (None: system level or
    # every patient).
    patients: tuple[str, ...] | None
    expires: datetime
    outputs: list[Doc] = field(default_factory=list)
    errors: list[Doc] = field(default_factory=list)
    next_file: int = 1

    def file_number(self) -> int:
        n = self.next_file
        self.next_file += 1
        return n


class FileWriter:
    """ndjson lines of one type into numbered files of chunked documents."""

    def __init__(self, store: JobStore, job: Job, rt: str) -> None:
        self.store, self.job, self.rt = store, job, rt
        self.n = 0
        self.seq = 0
        self.count = 0
        self.size = 0
        self.buf = bytearray()

    async def add(self, line: bytes) -> None:
        if self.n == 0:
            self.n = self.job.file_number()
        self.buf += line
        self.count += 1
        self.size += len(line)
        if len(self.buf) >= CHUNK_BYTES:
            await self._flush()
        if self.size >= FILE_BYTES:
            await self.close()

    async def _flush(self) -> None:
        if self.buf:
            await self.store.put_chunk(
                self.job.id, self.n, self.seq, bytes(self.buf), self.job.expires
            )
            self.seq += 1
            self.buf = bytearray()

    async def close(self) -> None:
        if self.n == 0:
            return
        await self._flush()
        entry = {"type": self.rt, "n": self.n, "count": self.count}
        (self.job.errors if self.rt == "OperationOutcome" else self.job.outputs).append(entry)
        self.n = self.seq = self.count = self.size = 0


def scope_filter(job: Job) -> Doc:
    """Patient and Group level: only resources in the chosen patients' compartments."""
    if job.spec.level == "system":
        return {}
    if job.patients is None:
        return {"comp": {"$exists": True, "$ne": []}}
    if not job.patients:
        return NOTHING
    return {"comp": {"$in": list(job.patients)}}


def type_query(job: Job, rt: str) -> Doc:
    spec, policy = job.spec, job.policy
    parts: list[Doc] = [{"rt": rt}, scope_filter(job)]
    if spec.since is not None:
        parts.append({"lu": {"$gt": spec.since}})
    if rt in spec.type_filters:
        parts.append(spec.type_filters[rt])
    if policy.restricted:
        parts.append(policy.type_filter(rt))
    return all_of(parts)


def _after(query: Doc, after: str | None) -> Doc:
    """The query past the last `_id` read. Kept flat (`{rt, _id: {$gt}}`, which the
    `(rt, _id)` index answers on both databases) unless the query names `_id` itself (a
    `_typeFilter` or a query-qualified scope on `_id`): then `$and`, never a merge."""
    if after is None:
        return query
    if "_id" in query:
        return {"$and": [query, {"_id": {"$gt": after}}]}
    return {**query, "_id": {"$gt": after}}


async def _rows(
    resources: ResourceStore, query: Doc, projection: Doc, secantus: bool
) -> AsyncGenerator[list[RawBSONDocument]]:
    """The query's documents in `_id` order, `BATCH` at a time: keyset windows of `WINDOW`
    rows on MongoDB, one window (the whole answer) on SecantusDB, where a limited window
    would read every row after `after` again, each window (module docstring)."""
    window = 0 if secantus else WINDOW
    after: str | None = None
    while True:
        seen = 0
        filt = _after(query, after)
        if secantus:
            filt = secantus_plan.point_first(filt)
        batches = resources.find_batches(
            filt, projection, sort=ID_ORDER, limit=window, batch=BATCH, what="The export query"
        )
        async with aclosing(batches):
            async for docs in batches:
                seen += len(docs)
                after = docs[-1]["_id"]
                yield docs
        if not window or seen < window:
            return


def sees_all(policy: AccessPolicy) -> bool:
    """The policy confines the caller to no compartments (no token, or `system/` scopes):
    every stored resource of a granted type is the caller's to see, bar scope filters."""
    return policy.compartments is None and policy.rules is None


async def visible_types(resources: ResourceStore, job: Job) -> list[str]:
    """The job's types that hold anything the caller may see under the job's own scope:
    what `X-Progress` counts, so a type the caller cannot see is neither named nor counted.
    A caller confined to compartments: one indexed `distinct` under the policy spares a
    query per known type (about 140); a type whose scope is narrowed further (a
    query-qualified scope, a `_typeFilter`) is then asked for one match. A caller who sees
    all (`sees_all`): every granted type, without asking the database, so the list says
    nothing of what it holds (on SecantusDB that `distinct` reads every stored document,
    as much as the export itself)."""
    policy = job.policy
    if sees_all(policy):
        return [rt for rt in job.types if policy.type_filter(rt) != NOTHING]
    where = scope_filter(job)
    if policy.restricted:
        where = all_of([where, policy.type_filter("*")])
    present = set(await resources.distinct("rt", where, what="The export query"))
    types = []
    for rt in job.types:
        if rt not in present:
            continue
        narrowed = rt in job.spec.type_filters or (policy.restricted and rt in policy.scope_filters)
        if policy.restricted and policy.type_filter(rt) == NOTHING:
            continue
        if narrowed and not await resources.find(
            type_query(job, rt), {"_id": 1}, limit=1, what="The export query"
        ):
            continue
        types.append(rt)
    return types


def _line(res: Doc) -> bytes:
    return orjson.dumps(res) + b"\n"


async def run_export(resources: ResourceStore, store: JobStore, job: Job) -> None:
    """Write every type's files, then mark the job completed (or raise `Cancelled`)."""
    indexer = resources.indexer
    secantus = not await uses_elem_match(resources.db)
    policy = job.policy
    # The post-check tests the stored `comp` and `ak`; a caller who sees all needs neither.
    check = policy.restricted and not sees_all(policy)
    projection = {"res": 1, "comp": 1, "ak": 1, "wf": 1} if check else {"res": 1, "wf": 1}
    problems = FileWriter(store, job, "OperationOutcome")
    for text in job.spec.warnings:
        await problems.add(_line(operation_outcome([Issue("not-supported", text, "warning")])))
    exported = 0
    types = await visible_types(resources, job)
    for i, rt in enumerate(types):
        writer = FileWriter(store, job, rt)
        elements = job.spec.elements_for(rt)
        progress = f"{rt} ({i + 1} of {len(types)} types), {exported} resources so far"
        if not await store.heartbeat(job.id, job.worker, progress):
            raise Cancelled(job.id)
        rows = _rows(resources, type_query(job, rt), projection, secantus)
        async with aclosing(rows):
            async for docs in rows:
                for raw in docs:
                    d = bson.decode(raw.raw)
                    res = d.get("res")
                    if not isinstance(res, dict):
                        continue
                    if policy.restricted and not screen(
                        policy, indexer, res, where="export", stored=d
                    ):
                        continue
                    if elements:
                        res = apply(res, None, elements)
                    try:
                        line = _line(res)
                    except TypeError as exc:
                        # A stored resource JSON cannot carry: report it, keep exporting.
                        log.error("export %s: %s cannot be serialised: %s", job.id, d["_id"], exc)
                        text = f"{d['_id']} could not be exported: it is not valid JSON"
                        await problems.add(_line(operation_outcome([Issue("exception", text)])))
                        continue
                    await writer.add(line)
                    exported += 1
                progress = f"{rt} ({i + 1} of {len(types)} types), {exported} resources so far"
                if not await store.heartbeat(job.id, job.worker, progress):
                    raise Cancelled(job.id)
        await writer.close()
    await problems.close()
    if not await store.complete(job.id, job.worker, job.outputs, job.errors):
        raise Cancelled(job.id)
