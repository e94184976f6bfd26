"""The whole server (create_app) with tokens required and the seed population loaded.

Shared by the access and exchange tests: tokens come from the real authorization pages
and token endpoint, so the development clients and logins are seeded too.

Seeding through the server (validation, indexing and a history version per resource, an
argon2 hash per login) costs tens of seconds on the 2-core CI machine, and about fifteen
modules need it. So each test process (each pytest-xdist worker) seeds once, through the
real `seed()` and `seed_development()`, into a template database, keeps the documents those
two wrote as raw BSON, and gives every module its own database holding byte-identical copies,
written before that module's server starts: the module's server then starts on it exactly as
a restarted server starts on a seeded database (its indexes built on start-up). A module that
writes disturbs no other. Cloning costs a fifth of seeding (docs/testing.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
from bson.raw_bson import RawBSONDocument
from fastapi import FastAPI
from pymongo import AsyncMongoClient

from fhir_server.seeding import seed
from tests.conftest import drop_test_database, make_settings
from tests.integration.auth.conftest import BASE

Collections = dict[str, list[RawBSONDocument]]


@dataclass(frozen=True)
class SeedSnapshot:
    """What seeding wrote, per collection: the population (`seed`) and the development
    logins and clients (`seed_development`)."""

    population: Collections
    logins: Collections


_SNAPSHOTS: dict[str, SeedSnapshot] = {}


def _raw_client(mongo_uri: str) -> AsyncMongoClient[RawBSONDocument]:
    # Raw BSON both ways: the copies are the stored bytes, not a round trip through Python
    # types (an Int64 stays an Int64, a datetime keeps its exact value).
    return AsyncMongoClient(mongo_uri, document_class=RawBSONDocument)


async def _dump(client: AsyncMongoClient[RawBSONDocument], database: str) -> Collections:
    db = client[database]
    return {
        name: await db[name].find({}).to_list(None) for name in await db.list_collection_names()
    }


def _added(after: Collections, before: Collections) -> Collections:
    """The documents of `after` that `before` lacks; seeding must only add documents."""
    added: Collections = {}
    for name, docs in after.items():
        old = {bytes(d.raw) for d in before.get(name, [])}
        assert old <= {bytes(d.raw) for d in docs}, f"seeding changed documents of {name}"
        new = [d for d in docs if bytes(d.raw) not in old]
        if new:
            added[name] = new
    return added


async def _build_snapshot(mongo_uri: str) -> SeedSnapshot:
    from fhir_server.app import create_app

    settings = make_settings(mongo_uri, auth_required=True)
    app = create_app(settings)
    raw = _raw_client(mongo_uri)
    try:
        async with app.router.lifespan_context(app):
            await app.state.ready
            empty = await _dump(raw, settings.database)
            report = await seed(app.state.ctx)
            assert report.failed == []
            seeded = await _dump(raw, settings.database)
            await anyio.to_thread.run_sync(app.state.smart_auth.seed_development)
            full = await _dump(raw, settings.database)
            await drop_test_database(app.state.ctx.store.client, settings.database)
    finally:
        await raw.close()
    return SeedSnapshot(population=_added(seeded, empty), logins=_added(full, seeded))


async def seed_snapshot(mongo_uri: str) -> SeedSnapshot:
    """This process's snapshot of a freshly seeded database, built on first use."""
    if mongo_uri not in _SNAPSHOTS:
        _SNAPSHOTS[mongo_uri] = await _build_snapshot(mongo_uri)
    return _SNAPSHOTS[mongo_uri]


async def restore_seed(mongo_uri: str, database: str, *, logins: bool = True) -> None:
    """Write the seed population (and, with `logins`, the development logins and clients)
    into `database`, which no server has opened yet: the seeded state without re-seeding."""
    snapshot = await seed_snapshot(mongo_uri)
    parts = (snapshot.population, snapshot.logins) if logins else (snapshot.population,)
    raw = _raw_client(mongo_uri)
    try:
        db = raw[database]
        for part in parts:
            for name, docs in part.items():
                await db[name].insert_many(docs, ordered=False)
    finally:
        await raw.close()


@asynccontextmanager
async def seeded_server(
    mongo_uri: str, **overrides: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app (for its state: store, audit sink, authorization server) and a client on
    it, on its own copy of the seeded database; the database is dropped afterwards."""
    from fhir_server.app import create_app

    settings = make_settings(mongo_uri, auth_required=True, **overrides)
    await restore_seed(mongo_uri, settings.database)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        await app.state.ready
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
            yield app, http
        await drop_test_database(app.state.ctx.store.client, settings.database)
