"""Request logs a person can read (issue 16, developer experience item 5).

One JSON line per HTTP request on the `fhir_server.requests` logger: `request_id`, `method`,
`route` (a template: ids become `{id}`, the query keeps parameter NAMES the server knows,
never a value), `status`, `ms` and `client_id` (the verified token's, when there was one).
So no patient's name, identifier or id reaches the log; uvicorn's access line, which prints
the raw URL, stays off unless ACCESS_LOG=1 asks for it (docs/rest.md, "Request logs").

`X-Request-Id` is honoured when it looks like an id (letters, digits, `-._:`, at most 128)
and echoed on the answer; otherwise, or when absent, one is generated. The pipeline notes
the client id through `note()`: a context variable the middleware sets per request.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("fhir_server.requests")

REQUEST_ID = re.compile(r"[A-Za-z0-9\-._:]{1,128}")
# A parameter name as the log shows it: a code, an optional word modifier, a chain of codes.
PARAM_NAME = re.compile(r"[A-Za-z0-9_\-]+(:[A-Za-z0-9\-]+)?(\.[A-Za-z0-9_\-]+)*")
_fields: ContextVar[dict[str, Any] | None] = ContextVar("request_log_fields", default=None)


def configure(stream: Any = None) -> None:
    """Lines of this logger are bare JSON (no level or logger prefix), one per line, on
    stderr beside uvicorn's own lines; `fhir-server serve` calls this."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False


def note(**fields: Any) -> None:
    """Add fields (e.g. client_id) to the current request's log line, if one is being kept."""
    current = _fields.get()
    if current is not None:
        current.update(fields)


def current_request_id() -> str | None:
    current = _fields.get()
    return None if current is None else current.get("request_id")


class FhirRoutes:
    """Templates of URLs below the FHIR base, from the server's types and search parameters."""

    def __init__(self, known_types: frozenset[str], params_for: Callable[[str], Any]) -> None:
        self.known_types = known_types
        self.params_for = params_for

    def path(self, segments: list[str]) -> tuple[str, str | None]:
        """(template, the resource type searched or acted on, if any)."""
        out: list[str] = []
        rt: str | None = None
        for i, seg in enumerate(segments):
            prev = out[-1] if out else ""
            if (
                seg.startswith("$")
                and re.fullmatch(r"\$[A-Za-z0-9\-]+", seg)
                or seg in ("metadata", "_history", "_search", ".well-known", "*")
                or (prev == ".well-known" and seg == "smart-configuration")
            ):
                out.append(seg)
            elif seg in self.known_types and (i == 0 or i == 2):
                out.append(seg)
                rt = seg
            elif prev == "_history":
                out.append("{vid}")
            elif i == 0:
                out.append("{type}")
            else:
                out.append("{id}")
        return "/" + "/".join(out), rt

    def query_names(self, raw: bytes, rt: str | None) -> list[str]:
        names: list[str] = []
        other = 0
        known = self.params_for(rt) if rt else {}
        for name, _ in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
            base = re.split(r"[:.]", name, maxsplit=1)[0]
            if not (base.startswith("_") and base[1:].isalpha()) and base not in known:
                other += 1
                continue
            shown = name if PARAM_NAME.fullmatch(name) else base
            if shown not in names:
                names.append(shown)
        if other:
            names.append(f"({other} other)")
        return names


class RequestLog:
    """Pure ASGI middleware (it runs in the request's own task, so `note()` reaches it)."""

    def __init__(self, app: ASGIApp, *, fhir_prefix: str = "/fhir", enabled: bool = True) -> None:
        self.app = app
        self.fhir_prefix = fhir_prefix
        self.enabled = enabled
        self._fhir: FhirRoutes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"")
        given = incoming.decode("latin-1")
        rid = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        fields: dict[str, Any] = {"request_id": rid}
        token = _fields.set(fields)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", rid.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _fields.reset(token)
            if self.enabled:
                ms = round((time.perf_counter() - started) * 1000, 1)
                self._emit(scope, fields, status, ms)

    def _emit(self, scope: Scope, fields: dict[str, Any], status: int, ms: float) -> None:
        try:
            route, query = self.template(scope)
        except Exception:  # a log line must never fail the request
            route, query = "(unknown)", []
        line: dict[str, Any] = {
            "request_id": fields["request_id"],
            "method": scope["method"],
            "route": route,
            "status": status,
            "ms": ms,
            "client_id": fields.get("client_id"),
        }
        if query:
            line["query"] = query
        log.info(orjson.dumps(line).decode())

    def template(self, scope: Scope) -> tuple[str, list[str]]:
        path: str = scope["path"]
        prefix = self.fhir_prefix
        if path == prefix or path.startswith(prefix + "/"):
            fhir = self._fhir_routes(scope)
            segments = [s for s in path[len(prefix) :].split("/") if s]
            below, rt = fhir.path(segments) if fhir else ("/{path}", None)
            names = fhir.query_names(scope.get("query_string", b""), rt) if fhir else []
            return prefix + (below if below != "/" else ""), names
        app = scope.get("app")
        for route in getattr(getattr(app, "router", None), "routes", []):
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return str(getattr(route, "path", "(route)")), []
        return "(unmatched)", []

    def _fhir_routes(self, scope: Scope) -> FhirRoutes | None:
        if self._fhir is None:
            ctx = getattr(getattr(scope.get("app"), "state", None), "ctx", None)
            if ctx is None:
                return None
            self._fhir = FhirRoutes(ctx.known_types, ctx.registry.params_for)
        return self._fhir
