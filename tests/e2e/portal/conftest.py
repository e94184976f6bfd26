"""One `fhir-server serve` with the seed and one headless Chromium for every portal test."""

from __future__ import annotations

import asyncio
import fcntl
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from tests.e2e.auth.conftest import CHROMIUM, CHROMIUM_ARGS, require_browser
from tests.e2e.conftest import LiveServer
from tests.integration.seeded import restore_seed

ROOT = Path(__file__).resolve().parents[3]
APP = ROOT / "portal_app"
# Screenshots of every page the tests open (docs/testing.md); git-ignored.
SHOTS = ROOT / "test-artifacts" / "portal"


def ensure_portal_libraries() -> None:
    """What `make portal` does: `npm ci` in portal_app/ (the npm registry), once."""
    if (APP / "node_modules" / "fhirclient" / "build" / "fhir-client.js").is_file():
        return
    assert shutil.which("npm"), "npm is needed for the portal app (make portal)"
    with open(APP / ".npm.lock", "w") as lock:  # two test workers: one installs
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (APP / "node_modules" / "fhirclient").is_dir():
            cmd = ["npm", "ci", "--silent", "--no-audit", "--no-fund", "--prefix", str(APP)]
            subprocess.run(cmd, check=True, timeout=300)


@pytest.fixture(scope="module")
def portal_server(mongo_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    ensure_portal_libraries()
    database = f"portal_{uuid.uuid4().hex[:10]}"
    # The worker's seed snapshot (logins and clients too), as the seeded modules use: no
    # re-seeding in the server process (docs/testing.md).
    asyncio.run(restore_seed(mongo_uri, database))
    env = {
        "MONGODB_URI": mongo_uri,
        "MONGODB_DATABASE": database,
        "AUTO_SEED": "0",
        "AUTH_REQUIRED": "1",
    }
    log = tmp_path_factory.mktemp("portal") / "server.log"
    server = LiveServer(env, log).start()
    yield f"http://127.0.0.1:{server.port}"
    server.stop()
    with MongoClient(mongo_uri) as client:
        client.drop_database(database)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    require_browser()
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
