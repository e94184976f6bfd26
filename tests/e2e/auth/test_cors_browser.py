"""CORS end to end: a browser SMART app on another origin than the server's.

The real server (`fhir-server serve`, uvicorn) listens on one loopback port; a static HTTP
server on a second port serves cors_page/ and client-js's browser build. In headless
Chromium the page runs `FHIR.oauth2.authorize` (standalone launch, public client, PKCE,
redirect URI on the page's origin: a loopback URI on any port, RFC 8252 section 7.3), the
test signs in and approves on the real pages, then `FHIR.oauth2.ready()` exchanges the code
at /auth/token and reads the patient: both cross-origin, the read with a preflight for its
Authorization header. The same read from `localhost` (not a registered origin: docs/rest.md)
must be blocked by the browser, which shows the test sees a missing grant.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest

from tests.e2e.auth.conftest import CHROMIUM, CHROMIUM_ARGS, require_browser
from tests.e2e.conftest import shared_db_env
from tests.integration.auth.conftest import PUBLIC, authorize_params, login_for, pkce

pytestmark = pytest.mark.e2e

PAGES = Path(__file__).parent / "cors_page"
PATIENT = "sponsor-james-carter"
SCOPE = "launch/patient openid fhirUser patient/*.rs"


@pytest.fixture
def page_port(node_modules: Path) -> Iterator[int]:
    """The app's own origin: the pages and client-js's browser bundle, nothing else."""
    files = {
        "/fhir-client.js": node_modules / "fhirclient" / "build" / "fhir-client.js",
        "/launch": PAGES / "launch.html",
        "/callback": PAGES / "callback.html",  # the registered redirect URI's path
        "/probe": PAGES / "probe.html",
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = files.get(urlsplit(self.path).path)
            if path is None:
                self.send_error(404)
                return
            body = path.read_bytes()
            kind = "text/javascript" if path.suffix == ".js" else "text/html; charset=utf-8"
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return None

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def _wait_for_login_page(origin: str, fhir_base: str) -> None:
    """The development accounts are created at start-up, after /metadata answers."""
    _, challenge = pkce()
    params = authorize_params(PUBLIC, "openid", challenge, aud=fhir_base)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        page = httpx.get(f"{origin}/auth/authorize", params=params, timeout=5)
        if page.status_code == 200 and "password" in page.text:
            return
        time.sleep(0.2)
    raise AssertionError("the login page never came up")


def _result(page: Any) -> str:
    """The page's outcome, once its script has written one."""
    page.wait_for_function(
        "() => !['waiting', 'launching'].includes(document.getElementById('result')?.textContent)",
        timeout=20_000,
    )
    return str(page.locator("#result").inner_text())


def test_client_js_in_chromium_from_another_origin(live_server, page_port, mongo_uri):
    require_browser()
    from playwright.sync_api import sync_playwright

    # The session's database: no server of its own to start.
    server = live_server(**{**shared_db_env(mongo_uri), "AUTH_REQUIRED": "1", "AUTO_SEED": "1"})
    server_origin = f"http://127.0.0.1:{server.port}"
    app_origin = f"http://127.0.0.1:{page_port}"
    _wait_for_login_page(server_origin, server.base)
    launch = f"{app_origin}/launch?" + "&".join(
        f"{k}={quote(v, safe='')}"
        for k, v in {"iss": server.base, "client_id": PUBLIC["client_id"], "scope": SCOPE}.items()
    )
    who = login_for("sponsor")
    console: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("console", lambda m: console.append(m.text))
            page.goto(launch)
            # client-js discovered the server and sent the browser to its login page.
            page.wait_for_url(f"{server_origin}/auth/authorize*", timeout=20_000)
            page.locator("form input[type=text]").fill(who["username"])
            page.locator("form input[type=password]").fill(who["password"])
            page.locator("form button[type=submit]").first.click()
            page.wait_for_load_state()
            page.locator(f'input[type=radio][value="Patient/{PATIENT}"]').check()
            page.get_by_role("button", name="Allow access").click()
            page.wait_for_url(f"{app_origin}/callback*", timeout=20_000)
            shown = _result(page)
            assert not shown.startswith("error"), (shown, console)
            read = json.loads(shown)
            assert read["resourceType"] == "Patient" and read["id"] == PATIENT, read

            # The same authorized read, first from the app's origin, then from one the
            # server does not allow: the preflight gets no grant and the browser blocks it.
            probe = quote(f"{server.base}/Patient/{PATIENT} {read['access_token']}", safe="")
            page.goto(f"{app_origin}/probe#{probe}")
            assert _result(page) == f"status 200 {PATIENT}"
            console.clear()
            page.goto(f"http://localhost:{page_port}/probe#{probe}")
            blocked = _result(page)
            assert blocked.startswith("blocked: TypeError"), blocked
            assert any("CORS policy" in line for line in console), console
        finally:
            browser.close()
