"""Bulk Data `$export`: kick-off, status, cancel and file download (FhirRequest in,
FhirResponse out). Bulk Data Access IG 2.0.0: https://hl7.org/fhir/uv/bulkdata/export.html

URLs below the FHIR base:

- `GET|POST $export`, `GET|POST Patient/$export`, `GET|POST Group/<id>/$export`: kick-off,
  202 with `Content-Location: <base>/$export-status/<job>` (routed by the operation table:
  fhir_server/operations/export.py);
- `GET $export-status/<job>`: 202 (`X-Progress`, `Retry-After`) while running, 200 with the
  manifest when done, the job's own 4xx/5xx OperationOutcome when it failed;
  `DELETE $export-status/<job>`: cancel and remove (202), then 404;
- `GET $export-file/<job>/<n>`: one ndjson file.

Status and files answer only the client (and user) that kicked the job off; anyone else gets
the same 404 as for a job that does not exist.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import orjson

from fhir_server.access.compartments import compartment_types
from fhir_server.access.policy import AccessPolicy
from fhir_server.access.screen import admitted
from fhir_server.errors import (
    BadRequest,
    FhirError,
    Forbidden,
    Issue,
    MethodNotAllowed,
    NotFound,
    NotSupported,
    operation_outcome,
)
from fhir_server.exchange.bulk_params import NDJSON, ExportSpec, parse_kickoff
from fhir_server.exchange.bulk_run import Job, sees_all
from fhir_server.exchange.bulk_store import KEEP, STALE, JobStore, now, orphan_outcome, owner_of
from fhir_server.exchange.bulk_tasks import exports
from fhir_server.rest.headers import http_date, prefer
from fhir_server.rest.interactions import read_visible
from fhir_server.rest.messages import FhirRequest, FhirResponse
from fhir_server.storage.store import instant

if TYPE_CHECKING:
    from fhir_server.context import ServerContext

STATUS = "$export-status"
FILE = "$export-file"
# Running jobs one client (and user) may have at once; more answers 429.
MAX_ACTIVE = 5
RETRY_AFTER_SECONDS = 2
Doc = dict[str, Any]
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")


class TooManyRequests(FhirError):
    def __post_init__(self) -> None:
        self.status = 429
        self.code = "throttled"
        super().__post_init__()


def _info(text: str) -> Doc:
    return operation_outcome([Issue("informational", text, severity="information")])


async def route(ctx: ServerContext, req: FhirRequest) -> FhirResponse:
    """The status and file URLs (the kick-off is on the operation table:
    fhir_server/operations/export.py)."""
    if req.in_bundle:
        raise BadRequest("$export and its status and file URLs are not available in a Bundle")
    path, method = req.path, "GET" if req.method == "HEAD" else req.method
    if path[0] == STATUS and len(path) == 2:
        if method == "GET":
            return await status(ctx, req, path[1])
        if method == "DELETE":
            return await cancel(ctx, req, path[1])
        raise MethodNotAllowed(f"{req.method} is not allowed on an export status URL")
    if path[0] == FILE and len(path) == 3:
        if method == "GET":
            return await download(ctx, req, path[1], path[2])
        raise MethodNotAllowed(f"{req.method} is not allowed on an export file URL")
    raise NotFound(f"/{'/'.join(path)} is not a supported URL", code="not-supported")


# --- kick-off ----------------------------------------------------------------------------


def _respond_async(value: str | None) -> bool:
    parts = (value or "").replace(";", ",").split(",")
    return any(p.strip().lower() == "respond-async" for p in parts)


def _granted(policy: AccessPolicy, rt: str) -> bool:
    try:
        policy.require(rt, "search")
    except Forbidden:
        return False
    return True


def _types(
    ctx: ServerContext, spec: ExportSpec, policy: AccessPolicy, lenient: bool
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The types to export and any lenient warnings. Asked-for types the token may not
    search answer 403; unasked ones are left out."""
    in_compartment = compartment_types(ctx.registry, ctx.store.inheritance) & set(ctx.known_types)
    if spec.types is None:
        candidates = ctx.known_types if spec.level == "system" else in_compartment
        return tuple(t for t in sorted(candidates) if _granted(policy, t)), ()
    out: list[str] = []
    warnings: list[str] = []
    for rt in spec.types:
        policy.require(rt, "search")
        if spec.level != "system" and rt not in in_compartment:
            text = f"{rt} is not in the Patient compartment; a {spec.level} export has none"
            if not lenient:
                raise NotSupported(text)
            warnings.append(text)
            continue
        out.append(rt)
    return tuple(out), tuple(warnings)


def _member(ref: object) -> str | None:
    if not isinstance(ref, str) or not ref.startswith("Patient/"):
        return None
    parts = ref.split("/")
    return f"Patient/{parts[1]}" if len(parts) >= 2 and parts[1] else None


async def _patients(
    ctx: ServerContext, req: FhirRequest, spec: ExportSpec
) -> tuple[str, ...] | None:
    """The patient compartments to export (None: every patient, or system level)."""
    if spec.level == "system":
        return None
    # Another patient's compartment exports nothing, as a missing patient's would, even
    # where it shares resources (a Group) with the caller's own.
    sees = req.policy.sees_compartment
    if spec.level == "patient":
        return tuple(p for p in spec.patients if sees(p)) if spec.patients else None
    req.policy.require("Group", "read")
    group = await read_visible(ctx, req, "Group", spec.group or "")
    members: list[str] = []
    for m in (group.resource or {}).get("member") or []:
        if not isinstance(m, dict) or m.get("inactive") is True:
            continue
        ref = _member((m.get("entity") or {}).get("reference"))
        if ref is not None:
            members.append(ref)
    if spec.patients:
        members = [m for m in members if m in spec.patients]
    return tuple(dict.fromkeys(m for m in members if sees(m)))


def _request_url(ctx: ServerContext, req: FhirRequest) -> str:
    url = f"{ctx.base_url}/{'/'.join(req.path)}"
    return f"{url}?{urlencode(req.params)}" if req.params else url


async def kickoff(
    ctx: ServerContext,
    req: FhirRequest,
    level: str,
    group: str | None,
    params: list[tuple[str, str]],
    dropped: tuple[str, ...] = (),
) -> FhirResponse:
    """Start a job. `params` passed the operation table's parser (names, cardinality,
    formats); `dropped` are the problems it let through under `handling=lenient`."""
    if req.in_bundle:
        raise BadRequest("$export and its status and file URLs are not available in a Bundle")
    if not _respond_async(req.header("prefer")):
        raise BadRequest("$export runs asynchronously: send the header Prefer: respond-async")
    lenient = prefer(req.header("prefer")).get("handling") == "lenient"
    spec = await parse_kickoff(
        ctx.store.db,
        ctx.registry,
        ctx.known_types,
        params,
        level=level,
        group=group,
        lenient=lenient,
    )
    policy = req.policy
    types, warnings = _types(ctx, spec, policy, lenient)
    warnings = dropped + warnings
    if warnings:
        spec = replace(spec, warnings=spec.warnings + warnings)
    patients = await _patients(ctx, req, spec)
    bulk = exports(ctx)
    store = await bulk.ensure(ctx)
    owner = owner_of(policy.auth)
    if await store.active(owner) >= MAX_ACTIVE:
        raise TooManyRequests(
            f"{MAX_ACTIVE} exports are already running for this client; wait or delete one",
            headers={"Retry-After": "60"},
        )
    job_id, t = uuid.uuid4().hex, now()
    await store.create(
        {
            "_id": job_id,
            "status": "in-progress",
            "owner": owner,
            "worker": bulk.worker,
            "request": _request_url(ctx, req),
            "transactionTime": t,
            "created": t,
            "heartbeat": t,
            "progress": "queued",
            "expires": t + KEEP,
            "params": spec.record(),
        }
    )
    bulk.start(ctx, Job(job_id, bulk.worker, spec, policy, types, patients, t + KEEP))
    return FhirResponse(
        status=202,
        body=_info(f"export job {job_id} accepted"),
        headers={"Content-Location": f"{ctx.base_url}/{STATUS}/{job_id}"},
    )


# --- status, cancel, files ---------------------------------------------------------------


def _gone(job_id: str) -> NotFound:
    return NotFound(f"there is no export job {job_id!r}")


async def _job(ctx: ServerContext, req: FhirRequest, job_id: str) -> tuple[JobStore, Doc]:
    """The job, if it exists and the caller started it; otherwise 404 either way."""
    store = await exports(ctx).ensure(ctx)
    doc = await store.get(job_id) if _JOB_ID.match(job_id) else None
    if doc is None or doc.get("owner") != owner_of(req.policy.auth):
        raise _gone(job_id)
    return store, doc


def _file_url(ctx: ServerContext, job_id: str, n: int) -> str:
    return f"{ctx.base_url}/{FILE}/{job_id}/{n}"


def manifest(ctx: ServerContext, doc: Doc) -> Doc:
    """The complete-status body (IG 2.0.0 "Response - Complete Status")."""
    job_id = doc["_id"]
    return {
        "transactionTime": instant(doc["transactionTime"]),
        "request": doc["request"],
        # With tokens off (development) nothing needs one; otherwise the files are
        # served only with the kick-off client's token.
        "requiresAccessToken": ctx.settings.auth_required,
        "output": [
            {"type": o["type"], "url": _file_url(ctx, job_id, o["n"]), "count": o["count"]}
            for o in doc.get("output", [])
        ],
        "deleted": [],
        "error": [
            {"type": "OperationOutcome", "url": _file_url(ctx, job_id, e["n"]), "count": e["count"]}
            for e in doc.get("error", [])
        ],
    }


async def status(ctx: ServerContext, req: FhirRequest, job_id: str) -> FhirResponse:
    store, doc = await _job(ctx, req, job_id)
    bulk = exports(ctx)
    if doc["status"] == "in-progress":
        mine = doc.get("worker") == bulk.worker
        dead = job_id not in bulk.tasks if mine else doc["heartbeat"] <= now() - STALE
        if dead:
            await store.fail(job_id, 500, orphan_outcome(), doc.get("worker"))
            store, doc = await _job(ctx, req, job_id)
    if doc["status"] == "in-progress":
        return FhirResponse(
            status=202,
            headers={
                "X-Progress": str(doc.get("progress", "in progress"))[:100],
                "Retry-After": str(RETRY_AFTER_SECONDS),
            },
        )
    if doc["status"] == "failed":
        failure = doc.get("failure") or {}
        return FhirResponse(status=int(failure.get("status", 500)), body=failure.get("outcome"))
    return FhirResponse(
        status=200,
        raw=orjson.dumps(manifest(ctx, doc)),
        media_type="application/json",
        headers={"Expires": http_date(doc["expires"])},
    )


async def cancel(ctx: ServerContext, req: FhirRequest, job_id: str) -> FhirResponse:
    store, _doc = await _job(ctx, req, job_id)
    # Deleting the job first stops a task in another process at its next heartbeat.
    await store.delete(job_id)
    exports(ctx).cancel(job_id)
    return FhirResponse(status=202, body=_info(f"export job {job_id} cancelled and deleted"))


async def download(ctx: ServerContext, req: FhirRequest, job_id: str, number: str) -> FhirResponse:
    store, doc = await _job(ctx, req, job_id)
    n = int(number) if number.isdigit() and len(number) < 9 else -1
    outputs = [o for o in doc.get("output", []) if o["n"] == n]
    errors = [e for e in doc.get("error", []) if e["n"] == n]
    if doc["status"] != "completed" or not (outputs or errors):
        raise NotFound(f"there is no file {number!r} in export job {job_id!r}")
    if outputs:
        # The token that downloads must still cover the type (IG: "scopes that cover all
        # resources being exported").
        req.policy.require(outputs[0]["type"], "search")
    if req.method == "HEAD":
        return FhirResponse(status=200, raw=b"", media_type=NDJSON)
    chunks = store.chunks(job_id, n)
    if outputs and req.policy.restricted and not sees_all(req.policy):
        chunks = _still_visible(ctx, req.policy, chunks)
    return FhirResponse(status=200, stream=await _started(chunks), media_type=NDJSON)


async def _started(chunks: AsyncGenerator[bytes]) -> AsyncIterator[bytes]:
    """The stream with its first chunk already read: a file that cannot be read answers
    its OperationOutcome (503) before the 200 goes out; past that, a database lost
    mid-file cuts the response short (the client sees an incomplete chunked body)."""
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        first = b""
    except BaseException:
        await chunks.aclose()
        raise

    async def stream() -> AsyncGenerator[bytes]:
        async with aclosing(chunks):
            if first:
                yield first
            async for chunk in chunks:
                yield chunk

    return stream()


async def _still_visible(
    ctx: ServerContext, policy: AccessPolicy, chunks: AsyncGenerator[bytes]
) -> AsyncGenerator[bytes]:
    """The file as the downloading request's own policy sees it now, chunk by chunk: a
    family grant revoked after the kick-off takes effect at once, on files already written
    too (docs/access.md). Chunks end at line ends (`FileWriter`); a line split across two
    would still be re-checked whole."""
    rest = b""
    async with aclosing(chunks):
        async for chunk in chunks:
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            kept = await _kept(ctx, policy, [line for line in lines if line])
            if kept:
                yield b"".join(kept)
    if rest:
        for line in await _kept(ctx, policy, [rest]):
            yield line


async def _kept(ctx: ServerContext, policy: AccessPolicy, lines: list[bytes]) -> list[bytes]:
    """The lines the policy admits, each ending in a newline. A type that inherits its
    compartments (a Binary, a Provenance: access/compartments.py) cannot be judged from the
    resource alone: it is judged on its current stored document, as every other path
    judges it (one `_id $in` query per chunk; a resource since deleted is withheld)."""
    resources = [orjson.loads(line) for line in lines]
    inheriting = ctx.store.inheritance.types if ctx.store.inheritance is not None else set()
    keys = [
        f"{r.get('resourceType')}/{r.get('id')}"
        for r in resources
        if r.get("resourceType") in inheriting
    ]
    stored: dict[str, Any] = {}
    for i in range(0, len(keys), 500):
        for d in await ctx.store.find(
            {"_id": {"$in": keys[i : i + 500]}}, {"comp": 1, "ak": 1}, what="The export file"
        ):
            stored[str(d["_id"])] = d
    return [
        line + b"\n"
        for line, r in zip(lines, resources, strict=True)
        if admitted(
            policy,
            ctx.store.indexer,
            r,
            stored.get(f"{r.get('resourceType')}/{r.get('id')}", {"comp": []})
            if r.get("resourceType") in inheriting
            else None,
        )
    ]
