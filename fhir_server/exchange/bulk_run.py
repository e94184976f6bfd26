"""Running one export: narrowed queries per type, post-checked resources, ndjson files.

Each type is read in keyset batches (`_id` after the last one, `BATCH` rows, each query with
`maxTimeMS`), so nothing loads a whole collection and no single query runs long. Every query
ANDs in the request's access policy (`AccessPolicy.type_filter`), every resource passes the
post-check (`screen`) before it is written: an export shows exactly what a search by the same
token would. Output is split per type, and into a further file past `FILE_BYTES`.
Bulk Data Access IG 2.0.0: https://hl7.org/fhir/uv/bulkdata/export.html
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from pymongo import ASCENDING

from fhir_server.access.policy import AccessPolicy
from fhir_server.access.screen import screen
from fhir_server.errors import Issue, operation_outcome
from fhir_server.exchange.bulk_params import ExportSpec
from fhir_server.exchange.bulk_store import CHUNK_BYTES, JobStore
from fhir_server.search.query import NOTHING, all_of
from fhir_server.search.summary import apply
from fhir_server.storage.store import ResourceStore

Doc = dict[str, Any]
log = logging.getLogger("fhir_server.exchange")

BATCH = 500
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


async def _batch(resources: ResourceStore, query: Doc, after: str | None) -> list[Doc]:
    if after is not None:
        # `$and`, never a merge: the type query may name `_id` itself (a `_typeFilter` or a
        # query-qualified scope on `_id`).
        query = {"_id": {"$gt": after}, "$and": [query]}
    return await resources.find(
        query,
        {"res": 1, "comp": 1, "ak": 1},
        sort=[("_id", ASCENDING)],
        limit=BATCH,
        what="The export query",
    )


async def visible_types(resources: ResourceStore, job: Job) -> list[str]:
    """The job's types that hold anything the caller may see under the job's own scope:
    what `X-Progress` counts, so a type the caller cannot see is neither named nor counted.
    One indexed `distinct` under the policy spares a query per known type (about 140); a
    type whose scope is narrowed further (a query-qualified scope, a `_typeFilter`) is
    then asked for one match."""
    policy = job.policy
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
    problems = FileWriter(store, job, "OperationOutcome")
    for text in job.spec.warnings:
        await problems.add(_line(operation_outcome([Issue("not-supported", text, "warning")])))
    exported = 0
    types = await visible_types(resources, job)
    for i, rt in enumerate(types):
        writer = FileWriter(store, job, rt)
        query = type_query(job, rt)
        elements = job.spec.elements_for(rt)
        after: str | None = None
        while True:
            progress = f"{rt} ({i + 1} of {len(types)} types), {exported} resources so far"
            if not await store.heartbeat(job.id, job.worker, progress):
                raise Cancelled(job.id)
            docs = await _batch(resources, query, after)
            for d in docs:
                res = d.get("res")
                if not isinstance(res, dict):
                    continue
                if job.policy.restricted and not screen(
                    job.policy, indexer, res, where="export", stored=d
                ):
                    continue
                if elements:
                    res = apply(res, None, elements)
                try:
                    line = _line(res)
                except TypeError as exc:
                    # A stored resource JSON cannot carry: report it, keep exporting the rest.
                    log.error("export %s: %s cannot be serialised: %s", job.id, d["_id"], exc)
                    text = f"{d['_id']} could not be exported: it is not valid JSON"
                    await problems.add(_line(operation_outcome([Issue("exception", text)])))
                    continue
                await writer.add(line)
                exported += 1
            if len(docs) < BATCH:
                break
            after = docs[-1]["_id"]
        await writer.close()
    await problems.close()
    if not await store.complete(job.id, job.worker, job.outputs, job.errors):
        raise Cancelled(job.id)
