"""The request pipeline: one FHIR HTTP request in, one HTTP answer out, no web framework.

    bearer -> policy -> route -> handler (with its post-check) -> render -> audit

`Pipeline.handle` takes an `HttpRequest` (method, path segments below the base, query
string, headers, body) and returns an `HttpResponse` (status, headers, body); the FastAPI
route in app.py only converts to and from them, so everything here is tested by calling it
directly (tests/integration/test_pipeline.py). Every failure becomes an OperationOutcome
here, the one place that translates errors: a `FhirError` carries its own status and issue
code; a resource too large for a MongoDB document answers 413; a query past its time limit
503 `timeout`; an unreachable database 503 `transient` with `Retry-After`; any other
database error 503; anything else 500 with nothing of the internals (the trace is logged).
Errors: https://hl7.org/fhir/R4/http.html#Status-Codes. See docs/rest.md, "Request flow".
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from urllib.parse import parse_qsl

from pymongo.errors import (
    ConnectionFailure,
    DocumentTooLarge,
    ExecutionTimeout,
    PyMongoError,
    ServerSelectionTimeoutError,
)

from fhir_server.access.audit import AuditRecord, AuditSink, note_response, query_patients
from fhir_server.access.masking import mask_text
from fhir_server.access.policy import build_policy
from fhir_server.config import Settings
from fhir_server.context import ServerContext
from fhir_server.devx.db_health import DatabaseHealth
from fhir_server.errors import FhirError, PayloadTooLarge, ServiceUnavailable
from fhir_server.exchange.imports import bundles as imported
from fhir_server.rest.binary_content import as_resource, is_raw_binary, wants_raw
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
from fhir_server.rest.dispatch import dispatch
from fhir_server.rest.messages import FhirRequest, FhirResponse, HttpRequest, HttpResponse
from fhir_server.rest.render import FHIR_JSON, error_response, negotiate, render
from smart_auth import AuthContext, bearer_token

log = logging.getLogger("fhir_server")

# Validates a bearer token (None: no Authorization header) or raises its 401.
Verifier = Callable[[str | None], Awaitable[AuthContext]]
# The path that needs no token and is never audited: the public CapabilityStatement.
METADATA = ["metadata"]


class Pipeline:
    """The FHIR endpoint of one server process (built once, in the app lifespan)."""

    def __init__(
        self,
        ctx: ServerContext,
        *,
        verify: Verifier,
        audit: AuditSink | None = None,
        db_health: DatabaseHealth | None = None,
    ) -> None:
        self.ctx = ctx
        self.verify = verify
        # None: nothing audited (tokens off, or AUDIT=0: docs/access.md, "Audit").
        self.audit = audit
        # An outage is logged once when it starts and once when it ends, not per request.
        self.db_health = db_health or DatabaseHealth()

    async def handle(self, request: HttpRequest) -> HttpResponse:
        """The answer to one request; never raises for anything the request or the database
        did (cancellation aside)."""
        path = list(request.path)
        if self.audit is None or path == METADATA:
            return await self._answer(request, None)
        record = AuditRecord(
            method=request.method,
            path=path,
            # Never an SSN in an AuditEvent's query text (access/masking.py).
            query=mask_text(request.query.decode("utf-8", "replace")),
        )
        try:
            answer = await self._answer(request, record)
            record.status = answer.status
            return answer
        finally:
            await self.audit.record(record)

    async def _answer(self, request: HttpRequest, record: AuditRecord | None) -> HttpResponse:
        # As Starlette reads them: latin-1 to text, then percent-decoding as UTF-8.
        params = parse_qsl(request.query.decode("latin-1"), keep_blank_values=True)
        try:
            answer = await self._run(request, params, record)
            self.db_health.succeeded()
            return answer
        except FhirError as exc:
            error = exc
        except DocumentTooLarge:
            # The resource fit the body limits but not with its index entries (16 MiB).
            error = PayloadTooLarge(
                "the resource is too large to store; MongoDB holds at most 16 MiB per document"
            )
        except ExecutionTimeout:
            error = ServiceUnavailable("the query ran past its time limit", code="timeout")
        except (ServerSelectionTimeoutError, ConnectionFailure) as exc:
            self.db_health.failed(exc)
            error = ServiceUnavailable(
                "the database is unavailable; retry shortly", headers={"Retry-After": "5"}
            )
        except PyMongoError:
            log.exception("database error on %s %s", request.method, _where(request))
            error = ServiceUnavailable("the database could not complete the request; retry shortly")
        except Exception:
            # Log the trace for operators; the client gets no internals.
            log.exception("unexpected error on %s %s", request.method, _where(request))
            error = FhirError("internal error; the request was not completed")
        return error_response(error, _pretty(params))

    async def _run(
        self, request: HttpRequest, params: list[tuple[str, str]], record: AuditRecord | None
    ) -> HttpResponse:
        ctx = self.ctx
        freq = await to_fhir_request(request, params, ctx.settings)
        # A read of a Binary's raw content answers its own type (rest/binary_content.py).
        media = FHIR_JSON if wants_raw(freq) else negotiate(freq)
        if ctx.settings.auth_required and freq.path != METADATA:
            auth = await self.verify(bearer_token(freq.header("authorization")))
            if record is not None:
                record.fhir_user, record.client_id = auth.fhir_user, auth.client_id
                record.subject, record.token_id = auth.subject, auth.token_id
                record.patient = _audit_patient(freq.path, auth.patient)
            tables = ctx.policy_tables
            freq.policy = await build_policy(
                ctx.store,
                tables,
                auth,
                break_glass=freq.header(tables.clinicians.break_glass_header),
                cache=ctx.policy_inputs,
                views=ctx.workflows.views,
            )
            if record is not None and freq.policy.break_glass:
                record.break_glass_reason = freq.policy.break_glass
        partner_bundle = imported.is_transaction(freq)
        since = imported.started() if partner_bundle else ""
        resp = await dispatch(ctx, freq)
        if partner_bundle:
            # A partner's transaction is stamped with Provenance as an import is
            # (exchange/imports/bundles.py).
            await imported.stamp_transaction(ctx, freq, resp, since)
        if record is not None:
            await _audit_answer(record, ctx, freq, resp)
        return render(freq, resp, media)


def _pretty(params: list[tuple[str, str]]) -> bool:
    """`_pretty=true` on an error (https://hl7.org/fhir/R4/http.html#general); the last
    value counts, as it always did for errors (Starlette's `query_params.get`)."""
    return dict(params).get("_pretty", "").lower() == "true"


def _where(request: HttpRequest) -> str:
    return "/" + "/".join(request.path)


async def _audit_answer(
    record: AuditRecord, ctx: ServerContext, freq: FhirRequest, resp: FhirResponse
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


async def _chunks(body: bytes | AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    if isinstance(body, bytes):
        if body:
            yield body
        return
    async for chunk in body:
        yield chunk


async def to_fhir_request(
    request: HttpRequest, params: list[tuple[str, str]], settings: Settings
) -> FhirRequest:
    """The request as the routing table reads it: limits checked, the body parsed."""
    check_query_length(request.query)
    headers = dict(request.headers)
    freq = FhirRequest(
        method=request.method, path=list(request.path), params=params, headers=headers
    )
    if request.method in ("POST", "PUT", "PATCH"):
        # A write to a resource URL carries one resource: the lower limit applies. The base
        # (batch/transaction) and operations take up to max_body_bytes.
        whole = not freq.path or freq.path[-1].startswith("$")
        limit = settings.max_body_bytes if whole else settings.max_resource_bytes
        raw = await read_limited(_chunks(request.body), headers.get("content-length"), limit)
        ctype = headers.get("content-type")
        # [type]/_search and operations take form fields too (operations/params.py), and
        # may come with no body at all.
        last = freq.path[-1] if freq.path else ""
        is_search = last == "_search" or last.startswith("$")
        if is_search and media_type(ctype) == FORM_TYPE:
            freq.body = raw.decode("utf-8", errors="replace")
        elif is_raw_binary(request.method, freq.path, ctype):
            freq.body = as_resource(freq.path, ctype or "", raw, headers)
        elif request.method == "PATCH":
            check_media_type(ctype, PATCH_TYPES)
            freq.body = parse_json(raw, max_bytes=limit, max_depth=settings.max_json_depth)
        elif raw.strip() or not is_search:
            check_media_type(ctype, JSON_TYPES | ({FORM_TYPE} if is_search else frozenset()))
            freq.body = parse_json(raw, max_bytes=limit, max_depth=settings.max_json_depth)
            if not freq.path:
                check_entry_sizes(freq.body, settings.max_resource_bytes)
    return freq
