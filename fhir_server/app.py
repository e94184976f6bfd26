"""The app factory: `create_app(settings)` opens the database in the lifespan.

No module-level clients or settings, so tests build as many apps as they like.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from pymongo.errors import (
    ConnectionFailure,
    DocumentTooLarge,
    ExecutionTimeout,
    PyMongoError,
    ServerSelectionTimeoutError,
)
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

import smart_auth
from fhir_server.access.audit import AuditRecord, AuditSink, note_response, query_patients
from fhir_server.access.audit_log import attach_audit_log
from fhir_server.access.audit_privacy import load_table as audit_privacy_table
from fhir_server.access.care_team import load_table as clinician_table
from fhir_server.access.compartments import load_table as inheritance_table
from fhir_server.access.family import load_table
from fhir_server.access.labels import normalised
from fhir_server.access.policy import build_policy
from fhir_server.access.writes import load_table as load_write_table
from fhir_server.config import Settings
from fhir_server.context import ServerContext
from fhir_server.db.client import ensure_indexes, open_client
from fhir_server.db.embedded import EmbeddedDatabase
from fhir_server.errors import (
    FhirError,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
)
from fhir_server.exchange.bulk_tasks import exports
from fhir_server.rest.body import (
    FORM_TYPE,
    JSON_TYPES,
    PATCH_TYPES,
    check_entry_sizes,
    check_media_type,
    check_query_length,
    media_type,
    parse_json,
    read_limited,
)
from fhir_server.rest.cors import CorsMiddleware, origin_check
from fhir_server.rest.dispatch import dispatch
from fhir_server.rest.messages import FhirRequest
from fhir_server.rest.no_store import NoStoreMiddleware
from fhir_server.rest.render import negotiate, render, render_error
from fhir_server.rest.shedding import LoadShedding
from fhir_server.search.extract import compartments, index_entries
from fhir_server.search.indexes import index_models
from fhir_server.search.registry import Registry
from fhir_server.stopping import graceful_timeout
from fhir_server.storage.audit_store import prepare_separate
from fhir_server.storage.store import ResourceStore
from fhir_server.validation import KNOWN_RESOURCE_TYPES, Validator

log = logging.getLogger("fhir_server")
FHIR_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
# The header a clinician states a break-the-glass reason in (profiles/access/clinicians.json).
BREAK_GLASS = clinician_table().break_glass_header


def build_context(settings: Settings, db: Any) -> ServerContext:
    registry = Registry.load_default()
    validator = Validator()

    def indexer(resource: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        # Labels spelled as the policy table does, wherever they sit (access/labels.py).
        return index_entries(normalised(resource), registry), compartments(resource, registry)

    store = ResourceStore(
        db,
        indexer,
        max_time_ms=settings.query_max_time_ms,
        # A malformed profiles/access/compartments.json stops the server here.
        inheritance=inheritance_table(known_types=KNOWN_RESOURCE_TYPES),
    )
    # AuditEvents in their own collection (profiles/access/audit_log.json; a malformed
    # table stops the server here).
    attach_audit_log(store, registry)
    return ServerContext(
        settings=settings,
        store=store,
        validator=validator,
        registry=registry,
        known_types=KNOWN_RESOURCE_TYPES,
    )


async def _prepare_database(ctx: ServerContext) -> None:
    """Create indexes, then seed an empty development database; retries until the DB answers."""
    while True:
        try:
            await ensure_indexes(ctx.store.db, index_models())
            # The audit log's indexes, and AuditEvents an older version kept in `resources`.
            if moved := await prepare_separate(ctx.store):
                log.info("moved %d AuditEvents into the audit log", moved)
            # $export jobs: their indexes, and jobs a dead process left running marked failed.
            await exports(ctx).prepare(ctx)
            break
        except (ConnectionFailure, ServerSelectionTimeoutError) as exc:
            # Only an unreachable database is worth waiting for; other errors are bugs.
            log.warning("database not ready (%s); retrying index creation", exc)
            await asyncio.sleep(2)
    settings = ctx.settings
    if settings.auto_seed and not settings.production:
        from fhir_server.seeding import seed_if_empty

        try:
            await seed_if_empty(ctx)
        except Exception:  # the server stays useful without its seed data
            log.exception("seeding the empty database failed")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    load_table()  # a malformed profiles/access/family.json stops the server here
    load_write_table(known_types=KNOWN_RESOURCE_TYPES)  # and profiles/access/writes.json
    audit_privacy_table()  # and profiles/access/audit.json

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        embedded: EmbeddedDatabase | None = None
        uri = settings.mongodb_uri
        if not uri:
            if settings.production:
                raise RuntimeError("production mode needs MONGODB_URI (a real MongoDB)")
            embedded = EmbeddedDatabase(settings.data_dir)
            uri = await asyncio.to_thread(embedded.start)
        app.state.embedded = embedded  # a stop out of time kills it (fhir_server/stopping.py)
        # The authorization server opens its own (synchronous) client on the same database.
        app.state.mongo_uri = uri
        client = open_client(
            uri, timeout_ms=settings.db_timeout_ms, socket_timeout_ms=settings.socket_timeout_ms
        )
        ctx = build_context(settings, client[settings.database])
        app.state.ctx = ctx
        prepare = asyncio.create_task(_prepare_database(ctx))
        app.state.ready = prepare
        # Serve once indexes (and development seed data) are in place; if the database is
        # slow to come up, serve anyway (503 until it answers) and finish in the background.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(prepare), timeout=60)
        # Audit only where there is someone to audit: with tokens required (docs/access.md).
        # AUDIT=0 (settings.audit) is a benchmark and diagnostic switch only: production
        # forces it on.
        audit = (
            AuditSink(ctx.store, max_pending=settings.audit_max_pending)
            if settings.auth_required and settings.audit
            else None
        )
        app.state.audit = audit
        if audit is not None:
            audit.start()
            # Logins (smart_auth, in worker threads) go through the same batched sink.
            app.state.smart_auth.audit_hook = audit.record_threadsafe
        try:
            yield
        finally:
            # The steps share one bound: the database may be gone (fhir_server/stopping.py).
            deadline = time.monotonic() + graceful_timeout(settings.stop_timeout_s)

            def left() -> float:
                return max(0.1, deadline - time.monotonic())

            prepare.cancel()
            # Running exports stop before the client closes, recording why they failed.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(exports(ctx).close(ctx), left())
            if audit is not None:
                await audit.close(timeout_s=left())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(client.close(), left())
            if embedded is not None:
                # Its own third: a clean stop lets WiredTiger checkpoint.
                third = graceful_timeout(settings.stop_timeout_s)
                await asyncio.to_thread(embedded.stop, timeout_s=third)

    app = FastAPI(
        title="MHS FHIR R4 server",
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    _install_error_handlers(app)

    def audit_backlog_full() -> bool:
        audit: AuditSink | None = getattr(app.state, "audit", None)
        return audit is not None and audit.full

    # Added innermost first. CORS is outermost: it answers preflights before anything else
    # runs, and a browser app can read even a shed request's 503 and its Retry-After.
    app.add_middleware(NoStoreMiddleware)
    app.add_middleware(LoadShedding, limit=settings.max_in_flight, saturated=audit_backlog_full)
    app.add_middleware(CorsMiddleware, allowed=origin_check(app, frozenset(settings.cors_origins)))
    # Before the FHIR catch-all, so /fhir/.well-known/smart-configuration is its own route.
    smart_auth.install(app, settings)

    @app.api_route("/fhir", methods=FHIR_METHODS, include_in_schema=False)
    @app.api_route("/fhir/{path:path}", methods=FHIR_METHODS, include_in_schema=False)
    async def fhir(request: Request, path: str = "") -> Response:
        audit: AuditSink | None = request.app.state.audit
        parts = [p for p in path.split("/") if p]
        if audit is None or parts == ["metadata"]:
            return await _fhir(request, path, None)
        record = AuditRecord(method=request.method, path=parts, query=request.url.query)
        try:
            response = await _fhir(request, path, record)
            record.status = response.status_code
            return response
        except FhirError as exc:
            record.status = exc.status
            raise
        finally:
            await audit.record(record)

    async def _fhir(request: Request, path: str, record: AuditRecord | None) -> Response:
        ctx: ServerContext = request.app.state.ctx
        try:
            freq = await to_fhir_request(request, path, ctx.settings)
            media = negotiate(freq)
            if ctx.settings.auth_required and freq.path != ["metadata"]:
                auth = await smart_auth.verify_access_token(
                    request.app, smart_auth.bearer_token(request.headers.get("authorization"))
                )
                if record is not None:
                    record.fhir_user, record.client_id = auth.fhir_user, auth.client_id
                    record.subject, record.token_id = auth.subject, auth.token_id
                    record.patient = _audit_patient(freq.path, auth.patient)
                freq.policy = await build_policy(
                    ctx.store, ctx.registry, auth, break_glass=freq.header(BREAK_GLASS)
                )
                if record is not None and freq.policy.break_glass:
                    record.break_glass_reason = freq.policy.break_glass
            resp = await dispatch(ctx, freq)
            if record is not None:
                await _audit_answer(record, ctx, freq, resp)
            return render(freq, resp, media)
        except FhirError:
            raise
        except DocumentTooLarge:
            # The resource fit the body limits but not with its index entries (16 MiB).
            raise PayloadTooLarge(
                "the resource is too large to store; MongoDB holds at most 16 MiB per document"
            ) from None
        except ExecutionTimeout:
            raise ServiceUnavailable("the query ran past its time limit", code="timeout") from None
        except (ServerSelectionTimeoutError, ConnectionFailure) as exc:
            log.warning("database unavailable: %s", exc)
            raise ServiceUnavailable(
                "the database is unavailable; retry shortly", headers={"Retry-After": "5"}
            ) from None
        except PyMongoError:
            log.exception("database error on %s %s", request.method, request.url.path)
            raise ServiceUnavailable(
                "the database could not complete the request; retry shortly"
            ) from None
        except Exception:
            # Log the trace for operators; the client gets no internals.
            log.exception("unexpected error on %s %s", request.method, request.url.path)
            raise FhirError("internal error; the request was not completed") from None

    return app


async def _audit_answer(
    record: AuditRecord, ctx: ServerContext, freq: FhirRequest, resp: Any
) -> None:
    """The patients and labels of the answer, for the audit; an audit bug must not fail the
    request (it is logged, and the event is still written with what is known)."""
    record.status = resp.status
    try:
        record.patients = query_patients(freq.path, freq.params)
        await note_response(record, ctx.store, resp)
    except Exception:
        log.exception("describing %s %s for the audit failed", freq.method, freq.path)


def _audit_patient(path: list[str], launch_patient: str | None) -> str | None:
    """The patient an interaction is about, for the audit (BALP patient entity)."""
    if len(path) >= 2 and path[0] == "Patient" and not path[1].startswith(("_", "$")):
        return f"Patient/{path[1]}"
    return f"Patient/{launch_patient}" if launch_patient else None


async def to_fhir_request(request: Request, path: str, settings: Settings) -> FhirRequest:
    check_query_length(request.scope.get("query_string", b""))
    headers = {k.lower(): v for k, v in request.headers.items()}
    freq = FhirRequest(
        method=request.method,
        path=[p for p in path.split("/") if p],
        params=list(request.query_params.multi_items()),
        headers=headers,
    )
    if request.method in ("POST", "PUT", "PATCH"):
        # A write to a resource URL carries one resource: the lower limit applies. The base
        # (batch/transaction) and operations take up to max_body_bytes.
        whole = not freq.path or freq.path[-1].startswith("$")
        limit = settings.max_body_bytes if whole else settings.max_resource_bytes
        raw = await read_limited(request.stream(), headers.get("content-length"), limit)
        ctype = headers.get("content-type")
        is_search = freq.path[-1:] == ["_search"]
        if is_search and media_type(ctype) == FORM_TYPE:
            freq.body = raw.decode("utf-8", errors="replace")
        elif request.method == "PATCH":
            check_media_type(ctype, PATCH_TYPES)
            freq.body = parse_json(raw, max_bytes=limit, max_depth=settings.max_json_depth)
        elif raw.strip() or not is_search:
            check_media_type(ctype, JSON_TYPES | ({FORM_TYPE} if is_search else frozenset()))
            freq.body = parse_json(raw, max_bytes=limit, max_depth=settings.max_json_depth)
            if not freq.path:
                check_entry_sizes(freq.body, settings.max_resource_bytes)
    return freq


def _install_error_handlers(app: FastAPI) -> None:
    def pretty(request: Request) -> bool:
        return request.query_params.get("_pretty", "").lower() == "true"

    @app.exception_handler(FhirError)
    async def fhir_error(request: Request, exc: FhirError) -> Response:
        return render_error(exc, pretty(request))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return render_error(NotFound(f"{request.url.path} is not a known URL"))
        err = FhirError(str(exc.detail))
        err.status = exc.status_code
        err.issues[0] = err.issues[0].__class__(code="processing", diagnostics=str(exc.detail))
        return render_error(err)
