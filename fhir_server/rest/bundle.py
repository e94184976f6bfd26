"""Batch and transaction bundles: https://hl7.org/fhir/R4/http.html#transaction

A transaction runs as one MongoDB multi-document transaction: every entry commits or none
does. Entries are processed in the order the spec prescribes (DELETE, POST, PUT/PATCH,
GET/HEAD), `urn:uuid` fullUrls and conditional references (`Patient?identifier=...`) are
resolved to real ids before anything is written, and every resource is validated before the
database transaction starts, so a bad entry costs no writes at all.

Batch entries run independently, each answering with its own status.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from pymongo.errors import DocumentTooLarge, OperationFailure

from fhir_server.access.policy import AccessPolicy
from fhir_server.context import ServerContext
from fhir_server.db.retry import ATTEMPTS, dropped_before_commit, note_retry
from fhir_server.errors import BadRequest, FhirError, Issue, PayloadTooLarge, PreconditionFailed
from fhir_server.rest import searching, write_guard
from fhir_server.rest.headers import prefer
from fhir_server.rest.idempotency import Guards, refuse_key
from fhir_server.rest.messages import FhirRequest, FhirResponse

Doc = dict[str, Any]
Dispatch = Callable[[ServerContext, FhirRequest], Awaitable[FhirResponse]]

MAX_ENTRIES = 10_000
# The database refusing a transaction for its size or its duration (MongoDB's
# TransactionTooLarge, TransactionExceededLifetimeLimitSeconds, TransactionTooLargeForCache;
# SecantusDB answers the last with the same code).
_TOO_LARGE = frozenset({257, 290, 388})
# Entries validated between two yields to the event loop (about 20-50 ms of CPU).
_YIELD_EVERY = 25
# Spec order for a transaction: https://hl7.org/fhir/R4/http.html#trules
_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
_REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    410: "Gone",
    412: "Precondition Failed",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Entity",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def status_line(status: int) -> str:
    return f"{status} {_REASONS.get(status, '')}".strip()


def _entry_request(entry: Doc, index: int) -> FhirRequest:
    req = entry.get("request")
    if not isinstance(req, dict):
        raise BadRequest(
            f"entry {index} has no request",
            issues=[
                Issue(
                    "required",
                    "entry.request is required",
                    expression=(f"Bundle.entry[{index}].request",),
                )
            ],
        )
    method = str(req.get("method", "")).upper()
    url = req.get("url")
    if method not in _ORDER or not isinstance(url, str) or not url:
        raise BadRequest(
            f"entry {index} needs request.method (GET, HEAD, POST, PUT, PATCH, "
            "DELETE) and request.url",
            issues=[
                Issue(
                    "required",
                    "request.method and request.url",
                    expression=(f"Bundle.entry[{index}].request",),
                )
            ],
        )
    parts = urlsplit(url)
    path = [p for p in parts.path.split("/") if p]
    headers: dict[str, str] = {}
    for field, header in (
        ("ifMatch", "if-match"),
        ("ifNoneExist", "if-none-exist"),
        ("ifNoneMatch", "if-none-match"),
        ("ifModifiedSince", "if-modified-since"),
    ):
        if req.get(field):
            headers[header] = str(req[field])
    body = entry.get("resource")
    if method == "PATCH" and isinstance(body, dict) and body.get("resourceType") == "Binary":
        body = _binary_patch(body)
    return FhirRequest(
        method=method,
        path=path,
        params=parse_qsl(parts.query, keep_blank_values=True),
        headers=headers,
        body=body,
        in_bundle=True,
    )


def _binary_patch(binary: Doc) -> Any:
    """A JSON Patch in a bundle travels as a Binary (https://hl7.org/fhir/R4/http.html#patch)."""
    import base64

    import orjson

    try:
        return orjson.loads(base64.b64decode(binary.get("data", "")))
    except (ValueError, orjson.JSONDecodeError):
        raise BadRequest("a PATCH entry's Binary does not hold a JSON Patch") from None


def _response_entry(resp: FhirResponse, *, with_resource: bool) -> Doc:
    r: Doc = {"status": status_line(resp.status)}
    if resp.location:
        r["location"] = resp.location
    if "ETag" in resp.headers:
        r["etag"] = resp.headers["ETag"]
    if resp.body and resp.body.get("meta", {}).get("lastUpdated"):
        r["lastModified"] = resp.body["meta"]["lastUpdated"]
    entry: Doc = {"response": r}
    if resp.body is not None:
        if resp.body.get("resourceType") == "OperationOutcome" and resp.status >= 400:
            r["outcome"] = resp.body
        elif with_resource:
            entry["resource"] = resp.body
    return entry


def _error_response(exc: FhirError) -> FhirResponse:
    return FhirResponse(status=exc.status, body=exc.outcome())


def bundle_entries(req: FhirRequest) -> tuple[str, list[Any]]:
    """The kind ("batch" or "transaction") and the entries of a Bundle to process, or the
    400/413 that says why it cannot be processed."""
    bundle = req.body
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise BadRequest("POST to the base URL takes a Bundle of type batch or transaction")
    kind = bundle.get("type")
    if kind not in ("batch", "transaction"):
        raise BadRequest(f"a Bundle of type {kind!r} cannot be processed; use batch or transaction")
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise BadRequest("Bundle.entry must be an array", code="structure")
    if len(entries) > MAX_ENTRIES:
        # One transaction, all or nothing, has to fit the database's own limits
        # (docs/rest.md, "Bundles"): past this many entries, split the bundle.
        raise PayloadTooLarge(f"a Bundle may hold at most {MAX_ENTRIES} entries; split it")
    return str(kind), entries


def wants_resources(req: FhirRequest) -> bool:
    return prefer(req.header("prefer")).get("return") == "representation"


def response_bundle(kind: str, out: list[Doc]) -> FhirResponse:
    return FhirResponse(
        status=200,
        body={
            "resourceType": "Bundle",
            "id": str(uuid.uuid4()),
            "type": f"{kind}-response",
            "entry": out,
        },
    )


async def process(ctx: ServerContext, req: FhirRequest, dispatch: Dispatch) -> FhirResponse:
    refuse_key(req, "a Bundle")
    kind, entries = bundle_entries(req)
    want_resource = wants_resources(req)
    if kind == "batch":
        out = await _batch(ctx, entries, dispatch, want_resource, req.policy)
    else:
        prepared = await prepare_transaction(ctx, entries, req.policy, want_resource)
        out = await write_transaction(ctx, prepared, dispatch)
    return response_bundle(kind, out)


async def _batch(
    ctx: ServerContext,
    entries: list[Any],
    dispatch: Dispatch,
    want_resource: bool,
    policy: AccessPolicy,
) -> list[Doc]:
    out = []
    for i, entry in enumerate(entries):
        try:
            if not isinstance(entry, dict):
                raise BadRequest(f"entry {i} is not an object", code="structure")
            sub = _entry_request(entry, i)
            sub.policy = policy
            if sub.path == [] and sub.method == "POST":
                raise BadRequest("a batch entry may not itself be a batch or transaction")
            resp = await dispatch(ctx, sub)
        except FhirError as exc:
            resp = _error_response(exc)
        except DocumentTooLarge:  # this entry's answer, not the whole batch's (docs/rest.md)
            resp = _error_response(PayloadTooLarge(f"entry {i}: too large to store (16 MiB)"))
        out.append(
            _response_entry(
                resp,
                with_resource=want_resource
                or (resp.status < 300 and sub.method in ("GET", "HEAD")),
            )
        )
    return out


def _rewrite_references(node: Any, mapping: dict[str, str]) -> Any:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "reference" and isinstance(v, str) and v in mapping:
                out[k] = mapping[v]
            else:
                out[k] = _rewrite_references(v, mapping)
        return out
    if isinstance(node, list):
        return [_rewrite_references(v, mapping) for v in node]
    return node


def _references(node: Any, found: set[str]) -> set[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "reference" and isinstance(v, str):
                found.add(v)
            else:
                _references(v, found)
    elif isinstance(node, list):
        for v in node:
            _references(v, found)
    return found


async def _resolve(
    ctx: ServerContext, reqs: list[FhirRequest], entries: list[Doc]
) -> dict[str, str]:
    """Map every fullUrl and conditional reference to the `Type/id` it will have."""
    mapping: dict[str, str] = {}
    claimed: dict[str, int] = {}
    for i, (sub, entry) in enumerate(zip(reqs, entries, strict=True)):
        full_url = entry.get("fullUrl")
        target: str | None = None
        if sub.method == "POST" and len(sub.path) == 1:
            rt = sub.path[0]
            condition = sub.header("if-none-exist")
            guards = Guards.of(sub, rt, sub.body) if condition else None
            if guards is not None:
                for key in guards.claim_keys():
                    if key in claimed:
                        raise BadRequest(
                            f"entries {claimed[key]} and {i} create a {rt} by the same "
                            "ifNoneExist: one conditional create per condition"
                        )
                    claimed[key] = i
                # Read before the search: the entry's create takes the claim from here.
                sub.claims = await guards.read(ctx)
            existing = (
                await searching.conditional_matches(ctx, rt, condition, sub) if condition else []
            )
            if len(existing) > 1:
                raise PreconditionFailed(f"entry {i}: ifNoneExist matches {len(existing)}")
            if existing:
                target = f"{rt}/{existing[0]}"
                sub.headers["x-existing-id"] = existing[0]
            else:
                sub.assigned_id = str(uuid.uuid4())
                target = f"{rt}/{sub.assigned_id}"
        elif sub.method == "PUT" and len(sub.path) == 2:
            target = "/".join(sub.path)
        if isinstance(full_url, str) and target:
            if full_url in mapping:
                raise BadRequest(f"entry {i}: fullUrl {full_url!r} appears twice")
            mapping[full_url] = target
            # An absolute fullUrl on this server also maps its relative form.
            if full_url.startswith(ctx.base_url + "/"):
                mapping[full_url[len(ctx.base_url) + 1 :]] = target
    for sub in reqs:
        for ref in _references(sub.body, set()):
            if "?" in ref and ref not in mapping and not ref.startswith(("urn:", "#", "http")):
                rt, query = ref.split("?", 1)
                ids = await searching.conditional_matches(ctx, rt, query, reqs[0])
                if len(ids) != 1:
                    raise PreconditionFailed(
                        f"conditional reference {ref!r} matches {len(ids)} resources, not one"
                    )
                mapping[ref] = f"{rt}/{ids[0]}"
    return mapping


@dataclass
class PreparedTransaction:
    """A transaction bundle parsed, its references resolved and every resource validated:
    all that is left is its database transaction (`write_transaction`)."""

    reqs: list[FhirRequest]
    want_resource: bool


def looks_up_before_writing(entries: list[Any]) -> bool:
    """Whether preparing these entries reads the database (an `ifNoneExist`, a conditional
    reference); a bundle without either is prepared from its own content alone, so the
    loader prepares it while the previous bundle's transaction runs."""
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        request = entry.get("request")
        if isinstance(request, dict) and request.get("ifNoneExist"):
            return True
        for ref in _references(entry.get("resource"), set()):
            if "?" in ref and not ref.startswith(("urn:", "#", "http")):
                return True
    return False


async def prepare_transaction(
    ctx: ServerContext, entries: list[Any], policy: AccessPolicy, want_resource: bool
) -> PreparedTransaction:
    """Everything a transaction does before its database transaction: entries parsed,
    `urn:uuid` and conditional references resolved, every resource validated."""
    reqs: list[FhirRequest] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise BadRequest(f"entry {i} is not an object", code="structure")
        sub = _entry_request(entry, i)
        sub.policy = policy
        if sub.path == [] and sub.method == "POST":
            raise BadRequest("a transaction entry may not itself be a batch or transaction")
        reqs.append(sub)
    mapping = await _resolve(ctx, reqs, entries)
    for i, sub in enumerate(reqs):
        if sub.body is not None and mapping:
            sub.body = _rewrite_references(sub.body, mapping)
        if sub.method in ("POST", "PUT") and isinstance(sub.body, dict):
            _prevalidate(ctx, sub, i)
        if i % _YIELD_EVERY == _YIELD_EVERY - 1:
            # Validation is CPU only: let other requests (and the loader's transaction
            # under way) move on between slices of a large bundle.
            await asyncio.sleep(0)
    return PreparedTransaction(reqs, want_resource)


async def write_transaction(
    ctx: ServerContext, prepared: PreparedTransaction, dispatch: Dispatch
) -> list[Doc]:
    """Run the prepared entries in one database transaction, their writes sent in bulk at
    the end (docs/storage.md, "Transactions in bulk"): every entry commits or none does."""
    reqs, want_resource = prepared.reqs, prepared.want_resource
    order = sorted(range(len(reqs)), key=lambda i: _run_order(ctx, reqs[i]))
    results: dict[int, FhirResponse] = {}
    for attempt in range(ATTEMPTS):
        try:
            results = await _transaction_attempt(ctx, reqs, order, dispatch)
            break
        except Exception as exc:
            # A pooled connection the database had dropped, before the commit: nothing was
            # written, so the whole transaction runs once more (db/retry.py).
            if attempt + 1 == ATTEMPTS or not dropped_before_commit(exc):
                raise
            note_retry("a transaction Bundle", exc)
    return [
        _response_entry(
            results[i], with_resource=want_resource or reqs[i].method in ("GET", "HEAD")
        )
        for i in range(len(reqs))
    ]


async def _transaction_attempt(
    ctx: ServerContext, reqs: list[FhirRequest], order: list[int], dispatch: Dispatch
) -> dict[int, FhirResponse]:
    """One run of the entries in one database transaction; runs again from the start
    (entries are not changed by a run: `_run_entry` reads `x-existing-id`, never pops it)."""
    results: dict[int, FhirResponse] = {}
    async with ctx.store.client.start_session() as session:
        try:
            async with (
                await session.start_transaction(),
                ctx.store.deferred_writes(session),
            ):
                for i in order:
                    sub = reqs[i]
                    sub.session = session
                    try:
                        results[i] = await _run_entry(ctx, sub, dispatch)
                    except FhirError as exc:
                        exc.diagnostics = f"entry {i}: {exc.diagnostics}"
                        exc.issues = [
                            Issue(x.code, f"entry {i}: {x.diagnostics}", x.severity, x.expression)
                            for x in exc.issues
                        ]
                        raise
        except OperationFailure as exc:
            if exc.code in _TOO_LARGE:
                raise PayloadTooLarge(
                    "the transaction is too large for one database transaction "
                    f"({exc.code}); nothing was changed, split the bundle"
                ) from None
            if exc.has_error_label("TransientTransactionError") or exc.code == 112:
                raise PreconditionFailed(
                    "the transaction conflicted with a concurrent "
                    "write; nothing was changed, retry it"
                ) from None
            raise
    return results


def _run_order(ctx: ServerContext, sub: FhirRequest) -> tuple[int, bool]:
    """The spec's order by method; within a method, the types that inherit their targets'
    compartments (a Provenance) after the rest, so they find targets created by the same
    transaction whatever the entries' order (docs/storage.md, "Inherited compartments")."""
    inheritance = ctx.store.inheritance
    inherits = inheritance is not None and bool(sub.path) and sub.path[0] in inheritance.types
    return _ORDER[sub.method], inherits


def _prevalidate(ctx: ServerContext, sub: FhirRequest, index: int) -> None:
    """Validate before the database transaction starts, naming the entry in each issue."""
    resource = sub.body
    assert isinstance(resource, dict)
    probe = resource if sub.method == "PUT" else {k: v for k, v in resource.items() if k != "id"}
    try:
        ctx.validator.validate(probe)
        sub.validated = True
    except FhirError as exc:
        prefix = f"Bundle.entry[{index}].resource"
        exc.issues = [
            Issue(
                x.code,
                f"entry {index}: {x.diagnostics}",
                x.severity,
                tuple(f"{prefix}.{e}" for e in x.expression),
            )
            for x in exc.issues
        ]
        exc.diagnostics = f"entry {index}: {exc.diagnostics}"
        raise


async def _run_entry(ctx: ServerContext, sub: FhirRequest, dispatch: Dispatch) -> FhirResponse:
    existing = sub.headers.get("x-existing-id")
    if existing is not None:
        # The entry is still a create: its permission is checked before the match answers,
        # and the match is read under the policy (hidden answers as missing).
        rt = sub.path[0]
        sub.policy.require(rt, "create")
        write_guard.precheck(ctx, sub.policy, rt, "create")
        filt = sub.policy.read_filter(rt)
        v = await ctx.store.read(rt, existing, session=sub.session, visible=filt)
        return FhirResponse(
            status=200,
            body=v.resource,
            headers={"ETag": v.etag},
            location=f"{v.rt}/{v.id}/_history/{v.vid}",
        )
    return await dispatch(ctx, sub)
