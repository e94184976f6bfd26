"""The whole server (create_app) with tokens required and the seed population loaded.

Shared by the access and exchange tests: tokens come from the real authorization pages
and token endpoint, so the development clients and logins are seeded too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
from fastapi import FastAPI

from fhir_server.seeding import seed
from tests.conftest import drop_test_database, make_settings
from tests.integration.auth.conftest import BASE


@asynccontextmanager
async def seeded_server(
    mongo_uri: str, **overrides: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app (for its state: store, audit sink, authorization server) and a client on
    it; the database is dropped afterwards."""
    from fhir_server.app import create_app

    settings = make_settings(mongo_uri, auth_required=True, **overrides)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        await app.state.ready
        report = await seed(app.state.ctx)
        assert report.failed == []
        await anyio.to_thread.run_sync(app.state.smart_auth.seed_development)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
            yield app, http
        await drop_test_database(app.state.ctx.store.client, settings.database)
