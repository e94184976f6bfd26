"""CORS for browser SMART apps: preflights and responses on the FHIR endpoint and on the
token, introspection and revocation endpoints.

An origin is allowed when it is the origin of a registered redirect URI (a loopback one on
any port, as RFC 8252 section 7.3 allows the redirect itself) or in CORS_ORIGINS. No
credentials mode: SMART apps send bearer tokens, never cookies, so
`Access-Control-Allow-Credentials` is never sent. Discovery documents and the JWKS stay
readable from any origin (their routes answer `*`).
See https://fetch.spec.whatwg.org/#http-cors-protocol and the CapabilityStatement's
`rest.security.cors`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("fhir_server.cors")

# The paths browsers call with a token; the rest of /auth is pages and redirects.
CORS_PREFIXES = ("/fhir",)
CORS_PATHS = frozenset({"/auth/token", "/auth/introspect", "/auth/revoke"})
ALLOW_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE"
# Response headers a page's script may read (safelisted ones need no mention).
EXPOSE_HEADERS = (
    "Location, ETag, Content-Location, Last-Modified, X-Progress, Retry-After, WWW-Authenticate"
)
PREFLIGHT_MAX_AGE = "600"
_HEADER_LIST = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+(\s*,\s*[A-Za-z0-9!#$%&'*+.^_`|~-]+)*$")

OriginCheck = Callable[[str], Awaitable[bool]]


def covered(path: str) -> bool:
    return path in CORS_PATHS or any(path == p or path.startswith(p + "/") for p in CORS_PREFIXES)


class CorsMiddleware:
    """Pure ASGI, so streaming responses pass through untouched."""

    def __init__(self, app: ASGIApp, allowed: OriginCheck) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not covered(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        ok = origin is not None and await self._allowed(origin)
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await self._preflight(send, origin if ok else None, headers)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                out.add_vary_header("Origin")
                if ok and origin is not None:
                    # Replaces a route's own `*` (discovery) with the checked origin.
                    out["Access-Control-Allow-Origin"] = origin
                    out["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _allowed(self, origin: str) -> bool:
        try:
            return await self.allowed(origin)
        except Exception:  # a failed lookup refuses the origin; the request still runs
            log.exception("checking the CORS origin failed")
            return False

    async def _preflight(self, send: Send, origin: str | None, headers: Headers) -> None:
        """204 with the grant for an allowed origin; 204 without one otherwise (the browser
        then blocks the request: nothing of the server's state is revealed either way)."""
        out: list[tuple[bytes, bytes]] = [(b"vary", b"Origin"), (b"content-length", b"0")]
        if origin is not None:
            requested = headers.get("access-control-request-headers", "").strip()
            out += [
                (b"access-control-allow-origin", origin.encode("latin-1")),
                (b"access-control-allow-methods", ALLOW_METHODS.encode()),
                (b"access-control-max-age", PREFLIGHT_MAX_AGE.encode()),
            ]
            # The requested names are echoed (Authorization, Prefer, If-Match, the
            # break-glass header...): the server reads only the headers it knows.
            if requested and _HEADER_LIST.match(requested):
                out.append((b"access-control-allow-headers", requested.encode("latin-1")))
        await send({"type": "http.response.start", "status": 204, "headers": out})
        await send({"type": "http.response.body", "body": b""})


def origin_check(app: Any, configured: frozenset[str]) -> OriginCheck:
    """The configured origins, then the registered clients' redirect URIs (cached by the
    authorization server, read in a worker thread: its client is synchronous)."""
    import anyio

    from smart_auth.clients import origin_allowed

    async def allowed(origin: str) -> bool:
        if origin.rstrip("/") in configured:
            return True
        server = getattr(app.state, "smart_auth", None)
        if server is None or not server.started:
            return False
        uris = await anyio.to_thread.run_sync(server.registered_redirect_uris)
        return origin_allowed(origin, uris)

    return allowed
