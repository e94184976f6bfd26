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
from pymongo.errors import ConnectionFailure, ServerSelectionTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Scope

import smart_auth
from fhir_server import consent_directory, portal_site
from fhir_server.access.audit import AuditSink
from fhir_server.access.audit_log import attach_audit_log
from fhir_server.access.audit_privacy import load_table as audit_privacy_table
from fhir_server.access.compartments import extend_registry
from fhir_server.access.compartments import load_table as inheritance_table
from fhir_server.access.family import load_table
from fhir_server.access.labels import normalised
from fhir_server.access.masking import install_log_masking
from fhir_server.access.policy_epochs import InputCache
from fhir_server.access.policy_tables import compile_tables
from fhir_server.access.writes import load_table as load_write_table
from fhir_server.config import Settings
from fhir_server.context import ServerContext
from fhir_server.db.client import ensure_indexes, open_client
from fhir_server.db.embedded import EmbeddedDatabase
from fhir_server.devx.db_health import DatabaseHealth
from fhir_server.devx.request_log import RequestLog
from fhir_server.devx.route_template import for_table
from fhir_server.devx.routes import build_routes as developer_routes
from fhir_server.errors import FhirError, NotFound
from fhir_server.exchange.bulk_tasks import exports
from fhir_server.exchange.identity import linking as identity_linking
from fhir_server.exchange.imports.tasks import imports
from fhir_server.notify.table import load_table as notification_table
from fhir_server.notify.worker import Worker
from fhir_server.operations.table import TABLE as OPERATIONS_TABLE
from fhir_server.pipeline import Pipeline
from fhir_server.portal.workflows import build as build_workflows
from fhir_server.rest.cors import CorsMiddleware, origin_check
from fhir_server.rest.idempotency import claim_store
from fhir_server.rest.messages import HttpRequest
from fhir_server.rest.no_store import NoStoreMiddleware
from fhir_server.rest.render import render_error, to_starlette
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
WELL_KNOWN = "/fhir/.well-known/"


def build_context(settings: Settings, db: Any) -> ServerContext:
    registry = Registry.load_default()
    # A malformed profiles/access/compartments.json stops the server here.
    inheritance = inheritance_table(known_types=KNOWN_RESOURCE_TYPES)
    # Types the table adds to the patient compartment (Task by `patient`): before anything
    # reads the definition (indexer, policy tables, audit log, workflows).
    extend_registry(registry, inheritance)
    validator = Validator()

    def indexer(resource: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        # Labels spelled as the policy table does, wherever they sit (access/labels.py).
        return index_entries(normalised(resource), registry), compartments(resource, registry)

    store = ResourceStore(
        db,
        indexer,
        max_time_ms=settings.query_max_time_ms,
        inheritance=inheritance,
    )
    # AuditEvents in their own collection (profiles/access/audit_log.json; a malformed
    # table stops the server here).
    attach_audit_log(store, registry)
    # A row naming an unknown type or an unreadable parameter type stops the server here.
    OPERATIONS_TABLE.check(KNOWN_RESOURCE_TYPES)
    return ServerContext(
        settings=settings,
        store=store,
        validator=validator,
        registry=registry,
        known_types=KNOWN_RESOURCE_TYPES,
        # Malformed access tables stop the server here, and requests only look them up.
        policy_tables=compile_tables(registry),
        # The portal workflows' tables (profiles/portal/) stop a malformed start here too.
        workflows=build_workflows(settings, registry),
        policy_inputs=InputCache(settings.policy_cache_size)
        if settings.policy_cache_size
        else None,
        operations=OPERATIONS_TABLE,
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
            # Idempotent creates' claims expire by a TTL index (rest/idempotency.py).
            await claim_store(ctx).ensure_indexes()
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

        # Account linking (smart_auth/linking.py) matches by the $match rules.
        app.state.smart_auth.identity_verifier = identity_linking.verifier(ctx)
        # Never a whole SSN in a logged URL (uvicorn's access log is configured by now).
        install_log_masking()

        async def verify(token: str | None) -> smart_auth.AuthContext:
            return await smart_auth.verify_access_token(app, token)

        # One view of the database per process: an outage is one line when it starts and
        # one when it ends (fhir_server/devx/db_health.py).
        db_health = DatabaseHealth()
        if audit is not None:
            audit.db_health = db_health
        app.state.pipeline = Pipeline(ctx, verify=verify, audit=audit, db_health=db_health)
        # The consent page's names and a clinician's care-team patients (item 4, issue 16).
        consent_directory.install(app.state.smart_auth, ctx.store)
        # Notification delivery (fhir_server/notify/worker.py); every process may run one.
        notifier = Worker(ctx, notification_table()) if settings.notify_worker else None
        app.state.notifier = notifier
        if notifier is not None:
            notifier.start()
        # $import jobs left by a stopped process are taken up again (exchange/imports/tasks.py).
        if settings.import_worker:
            imports(ctx).start_polling(ctx)
        try:
            yield
        finally:
            # The steps share one bound: the database may be gone (fhir_server/stopping.py).
            deadline = time.monotonic() + graceful_timeout(settings.stop_timeout_s)

            def left() -> float:
                return max(0.1, deadline - time.monotonic())

            prepare.cancel()
            # Running exports stop first (they only record why they failed), so the steps
            # below cannot give a running export the time to finish on a stopping server.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(exports(ctx).close(ctx), left())
            if notifier is not None:
                # Deliveries in flight finish or hand their claim back before the client closes.
                await notifier.stop(timeout_s=min(5.0, left()))
            # Running imports hand their lease back, so another process resumes them.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(imports(ctx).close(), left())
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
    if settings.access_log:
        # Outermost: one JSON line per request, preflights and shed requests too
        # (fhir_server/devx/request_log.py).
        app.add_middleware(RequestLog, templates=for_table(OPERATIONS_TABLE, KNOWN_RESOURCE_TYPES))

    async def fhir(request: Request) -> Response:
        """HTTP in and out only: the pipeline does the rest (fhir_server/pipeline.py)."""
        pipeline: Pipeline = request.app.state.pipeline
        path: str = request.path_params.get("path", "")
        answer = await pipeline.handle(
            HttpRequest(
                method=request.method,
                path=tuple(p for p in path.split("/") if p),
                query=request.scope.get("query_string", b""),
                headers={k.lower(): v for k, v in request.headers.items()},
                body=request.stream(),
            )
        )
        return to_starlette(answer)

    # Plain Starlette routes: the endpoint takes the request as it is, so FastAPI's
    # dependency and parameter machinery stays out. They come first (the router tries
    # routes in order, and matching each of the authorization server's cost more than the
    # rest of a cheap request's routing), except for the well-known URIs (RFC 8615), which
    # the authorization server answers (/fhir/.well-known/smart-configuration).
    for route_path in ("/fhir", "/fhir/{path:path}"):
        app.router.routes.append(
            FhirRoute(route_path, fhir, methods=FHIR_METHODS, include_in_schema=False)
        )
    smart_auth.install(app, settings)
    # The landing page, the OpenAPI document and its pages (fhir_server/devx/routes.py).
    app.router.routes.extend(developer_routes(settings))
    portal_site.install(app)  # the portal web app's files at /portal/ (docs/portal-app.md)
    # Any other well-known URI below the base answers as before: through the pipeline.
    app.add_route("/fhir/{path:path}", fhir, methods=FHIR_METHODS, include_in_schema=False)
    return app


class FhirRoute(Route):
    """The FHIR routes, leaving `/fhir/.well-known/*` to the routes after them."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope.get("path", "").startswith(WELL_KNOWN):
            return Match.NONE, {}
        return super().matches(scope)


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
