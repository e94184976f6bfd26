"""The npm SMART client library (`fhirclient`, client-js) against the running server.

A small Node app (client_js/app.js) uses client-js's Node adapter: it discovers the
server through /.well-known/smart-configuration, redirects to /auth/authorize with PKCE,
exchanges the code on /callback and reads the patient and their Observations. The test
plays the browser between the two, on the real login and consent pages.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fhir_server.db.embedded import free_port
from tests.e2e.auth.test_python_fhirclient import approve_sync, submit_login_sync
from tests.integration.auth.conftest import PUBLIC, login_for

APP = Path(__file__).parent / "client_js" / "app.js"


@pytest.fixture
def js_app(node_modules: Path, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = (tmp_path / "node.log").open("wb")
    proc = subprocess.Popen(
        ["node", str(APP), str(port), PUBLIC["client_id"]],
        env={**os.environ, "NODE_PATH": str(node_modules)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.get(f"{base}/ping", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    yield base
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


def _launch(browser: httpx.Client, app: str, role: str, patient: str, **params: str) -> dict:
    start = browser.get(f"{app}/launch", params=params)
    assert start.status_code == 302, start.text
    authorize_url = start.headers["location"]
    assert "code_challenge_method=S256" in authorize_url
    for _ in range(100):  # the development accounts are created at start-up
        page = browser.get(authorize_url)
        if page.status_code == 200 and "password" in page.text:
            break
        time.sleep(0.2)
    who = login_for(role)
    consent = submit_login_sync(browser, page.text, who["username"], who["password"])
    assert consent.status_code == 200, consent.text
    done = approve_sync(browser, consent.text, patient=patient)
    assert done.status_code == 302, done.text
    result = browser.get(done.headers["location"])
    assert result.status_code == 200, result.text
    return json.loads(result.text)


def test_standalone_and_ehr_launch_with_client_js(live_server, js_app, tmp_path):
    server = live_server(DATA_DIR=str(tmp_path / "js"), AUTH_REQUIRED="1", AUTO_SEED="1")
    origin = f"http://127.0.0.1:{server.port}"
    with httpx.Client(base_url=origin, timeout=30) as browser:
        standalone = _launch(
            browser,
            js_app,
            "sponsor",
            "Patient/sponsor-james-carter",
            iss=server.base,
            scope="launch/patient openid fhirUser patient/*.rs",
        )
        assert standalone["patient"] == "sponsor-james-carter"
        assert standalone["count"] > 0
        assert standalone["subjects"] == ["Patient/sponsor-james-carter"]

        ehr = browser.get(
            "/auth/ehr-launch",
            params={"launch_uri": f"{js_app}/launch", "patient": "child-liam-carter"},
        )
        assert ehr.status_code == 302
        launch_url = ehr.headers["location"] + "&scope=launch%20openid%20fhirUser%20patient/*.rs"
        start = browser.get(launch_url)
        assert start.status_code == 302, start.text
        page = browser.get(start.headers["location"])
        who = login_for("practitioner")
        consent = submit_login_sync(browser, page.text, who["username"], who["password"])
        done = approve_sync(browser, consent.text, patient="Patient/child-liam-carter")
        assert done.status_code == 302, done.text
        result = browser.get(done.headers["location"])
        assert result.status_code == 200, result.text
        assert json.loads(result.text)["patient"] == "child-liam-carter"
