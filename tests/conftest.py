"""Shared fixtures: a real database for the whole session, and apps built on it.

The database is SecantusDB started on a free port (in memory), or the real MongoDB named
by MONGODB_URI when that is set. Never a mock.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from pymongo.errors import AutoReconnect

from fhir_server.config import Settings
from fhir_server.db.embedded import EmbeddedDatabase

SYNTHEA_DIR = Path(__file__).parent / "data" / "synthea-r4"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--write-durations",
        action="store_true",
        help="write each file's setup+call+teardown seconds to tests/durations.json "
        "(the order in which pytest-xdist hands out files: tests/scheduling.py)",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("write_durations") and not hasattr(config, "workerinput"):
        from tests.scheduling import DURATIONS, DurationRecorder

        config.pluginmanager.register(DurationRecorder(DURATIONS), "file-durations")


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Longest files first under `--dist loadfile` (tests/scheduling.py)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from tests.scheduling import LongestFileFirst

    return LongestFileFirst(config, log)


def synthea_bundles() -> list[tuple[str, dict[str, Any]]]:
    """The 16 vendored Synthea transaction bundles as (name, bundle)."""
    import gzip

    import orjson

    return [
        (p.name.removesuffix(".json.gz"), orjson.loads(gzip.decompress(p.read_bytes())))
        for p in sorted(SYNTHEA_DIR.glob("*.json.gz"))
    ]


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    uri = os.environ.get("MONGODB_URI")
    if uri:
        yield uri
        return
    db = EmbeddedDatabase(tmp_path_factory.mktemp("secantus"), memory=True)
    yield db.start()
    db.stop()


def make_settings(uri: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "mongodb_uri": uri,
        "database": f"test_{uuid.uuid4().hex[:12]}",
        "auto_seed": False,
        "port": 8080,
        # The REST core's own tests run without tokens; tests/integration/access and the
        # auth tests turn it on.
        "auth_required": False,
        # Files a server writes under DATA_DIR (the development email outbox) stay out of
        # the checkout.
        "data_dir": Path(tempfile.gettempdir()) / f"fhir-tests-{os.getpid()}",
    }
    values.update(overrides)
    return Settings(**values)


async def drop_test_database(client: Any, name: str) -> None:
    """Drop a test's database, retrying when the driver reset its pool mid-drop: on a
    loaded machine the embedded server can answer its monitor late while it drops
    thousands of documents, and the in-flight drop is then cancelled (AutoReconnect)."""
    for attempt in range(3):
        try:
            await client.drop_database(name)
            return
        except AutoReconnect:
            if attempt == 2:
                raise
            await anyio.sleep(1)


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The real app with its lifespan, reached through httpx without a socket."""
    from fhir_server.app import create_app

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        await app.state.ready
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1:8080/fhir/"
        ) as client:
            client.app = app  # type: ignore[attr-defined]
            yield client
        await drop_test_database(app.state.ctx.store.client, settings.database)


@pytest.fixture(scope="module")
async def client(mongo_uri: str) -> AsyncIterator[httpx.AsyncClient]:
    """One app and database per test module; tests use fresh ids to stay independent."""
    async with running_app(make_settings(mongo_uri)) as c:
        yield c


FHIR_JSON = {"Content-Type": "application/fhir+json"}


def patient(**extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Patient",
        "name": [{"family": "Test", "given": ["Pat"]}],
    }
    body.update(extra)
    return body
