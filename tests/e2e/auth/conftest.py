"""A live authorization server (uvicorn in a thread) and a loopback redirect catcher."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import uvicorn

from fhir_server.db.embedded import free_port
from tests.conftest import make_settings
from tests.integration.auth.conftest import build_app

ROOT = Path(__file__).resolve().parents[3]
CLIENT_JS_CACHE = ROOT / ".cache" / "client-js"
CLIENT_JS_VERSION = "2.6.3"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def require_browser() -> None:
    """Skip where no browser is installed; in CI (CI=1) a missing browser is a failure."""
    missing = []
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing.append("the playwright package")
    if not shutil.which(CHROMIUM):
        missing.append(CHROMIUM + " (apt-get install -y chromium)")
    if missing:
        message = "browser tests need " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def node_modules() -> Path:
    """client-js (npm `fhirclient`) installed once into a git-ignored cache (npm registry):
    its Node adapter for client_js/app.js, its browser build for the CORS page."""
    target = CLIENT_JS_CACHE / "node_modules"
    CLIENT_JS_CACHE.parent.mkdir(parents=True, exist_ok=True)
    # Parallel test workers: the second waits for the first's install instead of racing it.
    with open(CLIENT_JS_CACHE.parent / ".client-js.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _install_client_js(target)
    return target


def _install_client_js(target: Path) -> None:
    if not (target / "fhirclient" / "package.json").exists():
        assert shutil.which("npm"), "npm is needed for the client-js tests"
        CLIENT_JS_CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                "npm",
                "install",
                "--silent",
                "--no-audit",
                "--no-fund",
                "--prefix",
                str(CLIENT_JS_CACHE),
                f"fhirclient@{CLIENT_JS_VERSION}",
            ],
            check=True,
            timeout=300,
        )


@dataclass
class Live:
    base: str
    app: Any


@pytest.fixture(scope="module")
def live_auth(mongo_uri: str) -> Iterator[Live]:
    port = free_port()
    settings = make_settings(mongo_uri, port=port)
    app = build_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    auth = app.state.smart_auth
    auth.seed_development()
    yield Live(f"http://127.0.0.1:{port}", app)
    server.should_exit = True
    thread.join(timeout=10)
    auth_store = getattr(auth, "_store", None)
    if auth_store is None:
        from smart_auth.store import AuthStore

        auth_store = AuthStore(mongo_uri, settings.database)
    auth_store.client.drop_database(settings.database)


@dataclass
class Catcher:
    url: str
    hits: list[dict[str, str]] = field(default_factory=list)


@pytest.fixture
def catcher() -> Iterator[Catcher]:
    """The app's loopback redirect URI (RFC 8252 section 7.3): records the query string."""
    hits: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/callback":  # not /favicon.ico
                hits.append({k: v[0] for k, v in parse_qs(url.query).items()})
            body = b"<!doctype html><title>Done</title><p>You can close this window.</p>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return None

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield Catcher(f"http://127.0.0.1:{httpd.server_address[1]}/callback", hits)
    httpd.shutdown()
    httpd.server_close()
