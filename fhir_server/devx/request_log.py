"""One JSON line per HTTP request (replacing uvicorn's access log), with a request id.

    {"ts": "...", "event": "request", "request_id": "...", "method": "GET",
     "route": "/fhir/Patient/{id}", "params": ["_include"], "status": 200,
     "latency_ms": 3.1, "client_id": "mhs-portal-public-app"}

- `X-Request-Id`: a caller's id is kept when it is a plain token (letters, digits, `.`,
  `_`, `-`, up to 128), else a new one is made; either way it is echoed in the response.
- `route` is the route template (route_template.py) and `params` the query parameter
  NAMES only: never a value, so no name or identifier of a patient reaches the log.
- `client_id` is the SMART client of a token this process verified (read from the token
  cache after the answer, no I/O); null without a token, with a bad one, or with the token
  cache off (AUTH_TOKEN_CACHE_SIZE=0).
See docs/rest.md, "Request log".
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fhir_server.devx.json_log import REQUESTS, line
from fhir_server.devx.json_log import logger as json_logger
from fhir_server.devx.route_template import RouteTemplates

HEADER = b"x-request-id"
INCOMING_ID = re.compile(rb"[A-Za-z0-9._\-]{1,128}")
PARAM_NAME = re.compile(r"[A-Za-z0-9_:.\-]{1,64}")
MAX_PARAMS = 40

# The client id of a verified token, or None (no I/O).
ClientOf = Callable[[Any, str], str | None]


def _client_of(app: Any, authorization: str) -> str | None:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    server = getattr(getattr(app, "state", None), "smart_auth", None)
    if server is None:
        return None
    ctx = server.cached_access_token(token.strip())
    return ctx.client_id if ctx is not None else None


def param_names(query: bytes) -> list[str]:
    names: list[str] = []
    for name, _ in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        word = name if PARAM_NAME.fullmatch(name) else "{other}"
        if word not in names:
            names.append(word)
        if len(names) == MAX_PARAMS:
            names.append("...")
            break
    return names


class RequestLog:
    """Pure ASGI middleware (no body buffering): the line is written when the answer's last
    byte has gone, or when the app raised."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        templates: RouteTemplates,
        log: logging.Logger | None = None,
        client_of: ClientOf = _client_of,
    ) -> None:
        self.app = app
        self.templates = templates
        self.log = log or json_logger(REQUESTS)
        self.client_of = client_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        incoming = headers.get(HEADER, b"")
        request_id = incoming.decode() if INCOMING_ID.fullmatch(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        done = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, done
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *[(k, v) for k, v in message.get("headers", []) if k.lower() != HEADER],
                    (HEADER, request_id.encode()),
                ]
            await send(message)
            last = message["type"] == "http.response.body" and not message.get("more_body")
            if last and not done:
                done = True
                self._write(scope, headers, request_id, status, start)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if not done:  # raised, or the client went away mid-answer
                done = True
                self._write(scope, headers, request_id, status, start)

    def _write(
        self,
        scope: Scope,
        headers: dict[bytes, bytes],
        request_id: str,
        status: int,
        start: float,
    ) -> None:
        try:
            route = getattr(scope.get("route"), "path", None)
            authorization = headers.get(b"authorization", b"").decode("latin-1")
            fields = {
                "event": "request",
                "request_id": request_id,
                "method": scope.get("method", ""),
                "route": self.templates.template(scope.get("path", ""), route),
                "params": param_names(scope.get("query_string", b"")),
                "status": status,
                "latency_ms": round((time.perf_counter() - start) * 1000, 2),
                "client_id": self.client_of(scope.get("app"), authorization)
                if authorization
                else None,
            }
            self.log.info(line(fields))
        except Exception:  # a log line must never fail a request
            logging.getLogger("fhir_server").exception("writing the request log line failed")
