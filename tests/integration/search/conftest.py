"""A private SecantusDB on a free port, loaded with the Synthea data in the storage shape."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient, MongoClient
from pymongo.errors import BulkWriteError

from fhir_server.search.indexes import index_models
from fhir_server.search.registry import Registry

sys.path.insert(0, str(Path(__file__).parent))
from synthea import BASE_LU, load_resources, to_doc  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def mongo_uri() -> Iterator[str]:
    port = _free_port()
    tmp = tempfile.TemporaryDirectory()
    exe = Path(sys.executable).parent / "secantusd-py"
    proc = subprocess.Popen(
        [str(exe), "--host", "127.0.0.1", "--port", str(port), "--storage-path", tmp.name],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    uri = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    deadline = time.time() + 30
    while True:
        try:
            with MongoClient(uri, serverSelectionTimeoutMS=500) as c:
                c.admin.command("ping")
            break
        except Exception:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                raise
            time.sleep(0.2)
    yield uri
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    tmp.cleanup()


@pytest.fixture(scope="session")
def registry() -> Registry:
    return Registry.load_default()


@pytest.fixture(scope="session")
def synthea() -> list[dict[str, Any]]:
    return load_resources()


@pytest.fixture(scope="session")
async def db(
    mongo_uri: str, registry: Registry, synthea: list[dict[str, Any]]
) -> AsyncIterator[Any]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri)
    database = client["search_test"]
    await database["resources"].create_indexes(index_models())
    docs = [to_doc(r, registry, BASE_LU + timedelta(seconds=i)) for i, r in enumerate(synthea)]
    try:
        await database["resources"].insert_many(docs, ordered=False)
    except BulkWriteError as e:
        # A loaded machine can time a batch out after the database applied part of it; the
        # driver's retry then finds those documents there already (duplicate keys, 11000).
        if any(err.get("code") != 11000 for err in e.details.get("writeErrors", [])):
            raise
    yield database
    await client.close()
