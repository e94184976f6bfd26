"""The SMART on FHIR authorization server (SMART App Launch 2.2) for the FHIR server.

Wiring (see docs/smart.md): ``install(app, settings)`` before the FHIR catch-all route;
``await verify_access_token(app, token)`` on every FHIR request; ``security_element(...)``
into the CapabilityStatement's ``rest.security``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI

from fhir_server.config import Settings
from smart_auth.config import AuthConfig
from smart_auth.discovery import security_element as _security_element
from smart_auth.models import AuthContext, GrantSubject
from smart_auth.rfc6750 import InvalidToken, www_authenticate
from smart_auth.scopes import Scope, allows, parse_scope, parse_scopes, query_filters
from smart_auth.server import AuthServer

__all__ = [
    "AuthConfig",
    "AuthContext",
    "AuthServer",
    "GrantSubject",
    "InvalidToken",
    "Scope",
    "allows",
    "bearer_token",
    "install",
    "parse_scope",
    "parse_scopes",
    "query_filters",
    "security_element",
    "verify_access_token",
    "www_authenticate",
]


def install(app: FastAPI, settings: Settings, config: AuthConfig | None = None) -> AuthServer:
    """Add the authorization server's routes and hook its start-up and shutdown.

    Call it before the FHIR catch-all route is registered. The server opens its own
    synchronous MongoDB client on ``settings.mongodb_uri``, or, when that is empty, on
    ``app.state.mongo_uri`` which the app's lifespan sets before it yields. It is stored
    as ``app.state.smart_auth``.
    """
    from smart_auth.routes import build_router, ensure_started

    server = AuthServer(settings, config)
    app.state.smart_auth = server
    app.include_router(build_router(server))
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        async with inner(a) as state:
            try:
                await ensure_started(server, a)
            except Exception:  # the database may come up later: routes retry lazily
                import logging

                logging.getLogger("smart_auth").exception("authorization server start failed")
            try:
                yield state
            finally:
                await anyio.to_thread.run_sync(server.close)

    app.router.lifespan_context = lifespan
    return server


def _server(app_or_server: FastAPI | AuthServer) -> AuthServer:
    if isinstance(app_or_server, AuthServer):
        return app_or_server
    server = getattr(app_or_server.state, "smart_auth", None)
    if not isinstance(server, AuthServer):
        raise RuntimeError("smart_auth.install(app, settings) was not called")
    return server


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (RFC 6750 section 2.1)."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


async def verify_access_token(
    app_or_server: FastAPI | AuthServer, token: str | None
) -> AuthContext:
    """Validate a bearer token into an :class:`AuthContext`; raise :class:`InvalidToken`.

    Checks the RS256 signature (algorithm pinned), ``typ``, issuer, expiry, audience (the
    FHIR base URL) and that neither the token nor its grant was revoked. ``InvalidToken``
    is a ``fhir_server.errors.Unauthorized`` carrying the ``WWW-Authenticate`` header.
    A token this process already verified is answered from its cache, until its ``exp``
    or a revocation anywhere (within ``AuthConfig.revocation_bound_s``): docs/smart.md,
    "Token cache".
    """
    server = _server(app_or_server)
    if not token:
        raise InvalidToken.build(server.config.base_url, "no access token", missing=True)
    if not server.started:
        if isinstance(app_or_server, FastAPI):
            from smart_auth.routes import ensure_started

            await ensure_started(server, app_or_server)
        else:
            raise RuntimeError("the authorization server has not started")
    cached = server.cached_access_token(token)
    if cached is not None:  # verified before, revoked nowhere: no thread, no database
        return cached
    return await anyio.to_thread.run_sync(server.verify_access_token, token)


def security_element(app_or_settings: FastAPI | AuthServer | Settings) -> dict[str, Any]:
    """``CapabilityStatement.rest.security``: SMART-on-FHIR service and ``oauth-uris``."""
    if isinstance(app_or_settings, Settings):
        return _security_element(AuthConfig.from_settings(app_or_settings))
    return _security_element(_server(app_or_settings).config)
