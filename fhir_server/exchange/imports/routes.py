"""`$import` kick-off, status, cancel and error files (FhirRequest in, FhirResponse out).

Bulk Data Import, "ping and pull" (the Bulk Data IG's import draft): the partner POSTs a
Parameters naming its NDJSON files (`inputFormat`, `inputSource`, `storageDetail`, and
`input` with parts `type` and `url`), with `Prefer: respond-async`; the answer is 202 with
`Content-Location: <base>/$import-status/<job>`. That URL answers 202 with `X-Progress`
while the job runs, then 200 with a manifest of per-file counts and error-file URLs
(`<base>/$import-errors/<job>/<n>`: NDJSON OperationOutcomes); DELETE cancels. Only the
client that started a job sees it; anyone else gets the 404 of a job that does not exist.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import orjson

from fhir_server.errors import BadRequest, Forbidden, MethodNotAllowed, NotFound
from fhir_server.exchange.bulk_routes import TooManyRequests, _info, _respond_async
from fhir_server.exchange.bulk_store import owner_of
from fhir_server.exchange.imports import guard
from fhir_server.exchange.imports.run import blank_state
from fhir_server.exchange.imports.store import ImportStore, new_id, now
from fhir_server.exchange.imports.tasks import imports, partner_of
from fhir_server.rest.messages import FhirRequest, FhirResponse
from fhir_server.storage.store import instant

if TYPE_CHECKING:
    from fhir_server.context import ServerContext
    from fhir_server.operations.registry import OperationCall

STATUS = "$import-status"
ERRORS = "$import-errors"
NDJSON = "application/fhir+ndjson"
RETRY_AFTER_SECONDS = 2
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
Doc = dict[str, Any]


async def kickoff(ctx: ServerContext, req: FhirRequest, call: OperationCall) -> FhirResponse:
    if req.in_bundle:
        raise BadRequest("$import is not available in a Bundle")
    if not _respond_async(req.header("prefer")):
        raise BadRequest("$import runs asynchronously: send the header Prefer: respond-async")
    jobs = imports(ctx)
    table = jobs.table
    auth = req.policy.auth
    if auth is None or not auth.is_system:
        raise Forbidden("$import needs a registered partner's backend-service token")
    partner = await partner_of(ctx, auth.client_id)
    if partner is None or not partner.get("organization"):
        raise Forbidden("$import needs a client registered as a partner with an Organization")
    fmt = call.params.get("inputFormat")
    if fmt not in table.input_formats:
        raise BadRequest(f"inputFormat must be one of {', '.join(table.input_formats)}")
    storage = (call.params.get("storageDetail") or {}).get("type", "https")
    if storage not in table.storage_types:
        raise BadRequest(f"storageDetail type must be one of {', '.join(table.storage_types)}")
    inputs = call.params.all("input")
    if not inputs or len(inputs) > table.max_inputs:
        raise BadRequest(f"$import takes 1 to {table.max_inputs} input parameters")
    prefixes = list(partner.get("import_urls") or [])
    for item in inputs:
        rt, url = item["type"], item["url"]
        if rt not in ctx.known_types:
            raise BadRequest(f"input type {rt!r} is not a resource type this server knows")
        req.policy.require(rt, "create")
        req.policy.require(rt, "update")
        if not guard.registered(url, prefixes):
            raise Forbidden(f"{url} is not under a URL this client registered for imports")
        why = await guard.why_refused(table, url, ctx.settings.production)
        if why is not None:
            raise Forbidden(why)
    req.policy.require("Provenance", "update")
    store = await jobs.ensure(ctx)
    owner = owner_of(auth)
    if await store.active(owner) >= table.active_jobs_per_client:
        raise TooManyRequests(
            f"{table.active_jobs_per_client} imports are already running for this client",
            headers={"Retry-After": "60"},
        )
    t = now()
    job: Doc = {
        "_id": new_id(),
        "status": "in-progress",
        "owner": owner,
        "partner": {"client": auth.client_id, "organization": partner["organization"]},
        "auth": {
            "subject": auth.subject,
            "client_id": auth.client_id,
            "scope": auth.scope,
            "token_id": auth.token_id,
            "grant_id": auth.grant_id,
        },
        "request": f"{ctx.base_url}/$import",
        "inputSource": call.params.get("inputSource"),
        "inputs": [{"type": x["type"], "url": x["url"], "state": blank_state()} for x in inputs],
        "transactionTime": t,
        "created": t,
        "claim": new_id(),
        "worker": jobs.worker,
        "lease": t + timedelta(seconds=jobs.lease_s),
        "progress": "queued",
        "expires": t + timedelta(hours=table.keep_hours),
    }
    await store.create(job)
    jobs.run(ctx, job)
    return FhirResponse(
        status=202,
        body=_info(f"import job {job['_id']} accepted"),
        headers={"Content-Location": f"{ctx.base_url}/{STATUS}/{job['_id']}"},
    )


async def route(ctx: ServerContext, req: FhirRequest) -> FhirResponse:
    if req.in_bundle:
        raise BadRequest("$import status and error URLs are not available in a Bundle")
    path, method = req.path, "GET" if req.method == "HEAD" else req.method
    if path[0] == STATUS and len(path) == 2:
        if method == "GET":
            return await status(ctx, req, path[1])
        if method == "DELETE":
            return await cancel(ctx, req, path[1])
        raise MethodNotAllowed(f"{req.method} is not allowed on an import status URL")
    if path[0] == ERRORS and len(path) == 3 and method == "GET":
        return await errors(ctx, req, path[1], path[2])
    raise NotFound(f"/{'/'.join(path)} is not a supported URL", code="not-supported")


async def _job(ctx: ServerContext, req: FhirRequest, job_id: str) -> tuple[ImportStore, Doc]:
    store = await imports(ctx).ensure(ctx)
    doc = await store.get(job_id) if _JOB_ID.match(job_id) else None
    auth = req.policy.auth
    if doc is None or auth is None or doc.get("owner") != owner_of(auth):
        raise NotFound(f"there is no import job {job_id!r}")
    return store, doc


def manifest(ctx: ServerContext, doc: Doc) -> Doc:
    out, err = [], []
    for n, item in enumerate(doc["inputs"]):
        s = item.get("state") or blank_state()
        out.append(
            {
                "type": item["type"],
                "inputUrl": item["url"],
                "count": s["created"] + s["updated"],
                "created": s["created"],
                "updated": s["updated"],
                "unchanged": s["unchanged"],
            }
        )
        if s["failed"]:
            err.append(
                {
                    "type": "OperationOutcome",
                    "inputUrl": item["url"],
                    "count": s["failed"],
                    "url": f"{ctx.base_url}/{ERRORS}/{doc['_id']}/{n}",
                }
            )
    return {
        "transactionTime": instant(doc["transactionTime"]),
        "request": doc["request"],
        "requiresAccessToken": True,
        "output": out,
        "error": err,
    }


async def status(ctx: ServerContext, req: FhirRequest, job_id: str) -> FhirResponse:
    _store, doc = await _job(ctx, req, job_id)
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
        status=200, raw=orjson.dumps(manifest(ctx, doc)), media_type="application/json"
    )


async def cancel(ctx: ServerContext, req: FhirRequest, job_id: str) -> FhirResponse:
    store, _doc = await _job(ctx, req, job_id)
    await store.delete(job_id)
    imports(ctx).cancel(job_id)
    return FhirResponse(status=202, body=_info(f"import job {job_id} cancelled and deleted"))


async def errors(ctx: ServerContext, req: FhirRequest, job_id: str, number: str) -> FhirResponse:
    store, doc = await _job(ctx, req, job_id)
    n = int(number) if number.isdigit() and len(number) < 6 else -1
    if doc["status"] != "completed" or not 0 <= n < len(doc["inputs"]):
        raise NotFound(f"there is no error file {number!r} in import job {job_id!r}")
    body = b"".join([line async for line in store.error_lines(job_id, n)])
    return FhirResponse(status=200, raw=body, media_type=NDJSON)
