"""The Python SMART client library (`fhirclient`) against the running server.

It discovers the endpoints through the CapabilityStatement's oauth-uris extension, sends
the user to /auth/authorize with PKCE, exchanges the code and reads FHIR data with the
token: a standalone launch as a third-party app would do it.
"""

from __future__ import annotations

import time

import fhirclient.client as fhirclient
import httpx
import pytest

from tests.integration.auth.conftest import PUBLIC, approve, login_for, query, submit_login


def test_standalone_launch_with_python_fhirclient(live_server, tmp_path):
    from fhirclient.models.observation import Observation
    from fhirclient.models.patient import Patient

    server = live_server(DATA_DIR=str(tmp_path / "smart"), AUTH_REQUIRED="1", AUTO_SEED="1")
    sponsor = login_for("sponsor")
    redirect = "http://127.0.0.1:53999/callback"
    client = fhirclient.FHIRClient(
        settings={
            "app_id": PUBLIC["client_id"],
            "api_base": server.base,
            "redirect_uri": redirect,
            "scope": "launch/patient openid fhirUser patient/*.rs",
        }
    )
    authorize_url = client.authorize_url
    assert authorize_url.startswith(f"http://127.0.0.1:{server.port}/auth/authorize")

    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=30) as browser:
        for _ in range(100):  # the development accounts are created at start-up
            page = browser.get(authorize_url)
            if page.status_code == 200 and "password" in page.text:
                break
            time.sleep(0.2)
        consent = submit_login_sync(browser, page.text, sponsor["username"], sponsor["password"])
        assert consent.status_code == 200, consent.text
        done = approve_sync(browser, consent.text, patient="Patient/sponsor-james-carter")
        assert done.status_code == 302, done.text
        location = done.headers["location"]
    assert location.startswith(redirect)
    assert "code" in query(location)

    # fhirclient checks the returned state itself and exchanges the code with its verifier.
    client.handle_callback(location)
    assert client.ready
    assert client.patient_id == "sponsor-james-carter"
    patient = Patient.read(client.patient_id, client.server)
    assert patient.id == "sponsor-james-carter"
    search = Observation.where({"subject": f"Patient/{client.patient_id}"})
    observations = list(search.perform_resources_iter(client.server))
    assert observations, "the sponsor has observations"
    assert {o.subject.reference for o in observations} == {"Patient/sponsor-james-carter"}
    # Another patient's record answers as missing, through the library too.
    from fhirclient.server import FHIRNotFoundException

    with pytest.raises(FHIRNotFoundException):
        Patient.read("veteran-samuel-ortiz", client.server)


def submit_login_sync(browser: httpx.Client, page: str, username: str, password: str):
    """The async helpers' form logic, driven by a synchronous client."""
    return _run_sync(browser, submit_login, page, username, password)


def approve_sync(browser: httpx.Client, page: str, *, patient: str):
    return _run_sync(browser, approve, page, patient=patient)


class _SyncAdapter:
    """Lets the async form helpers post through a synchronous httpx client."""

    def __init__(self, browser: httpx.Client) -> None:
        self.browser = browser

    async def post(self, url: str, **kwargs):
        return self.browser.post(url, **kwargs)

    async def get(self, url: str, **kwargs):
        return self.browser.get(url, **kwargs)


def _run_sync(browser: httpx.Client, fn, *args, **kwargs):
    import asyncio

    return asyncio.run(fn(_SyncAdapter(browser), *args, **kwargs))


def _wait_for_login_page(browser: httpx.Client, url: str) -> httpx.Response:
    for _ in range(100):  # the development accounts are created at start-up
        page = browser.get(url)
        if page.status_code == 200 and "password" in page.text:
            return page
        time.sleep(0.2)
    raise AssertionError(page.text)


def test_ehr_launch_with_python_fhirclient(live_server, tmp_path):
    from fhirclient.models.patient import Patient

    server = live_server(DATA_DIR=str(tmp_path / "ehr"), AUTH_REQUIRED="1", AUTO_SEED="1")
    origin = f"http://127.0.0.1:{server.port}"
    with httpx.Client(base_url=origin, timeout=30) as browser:
        # The development EHR records a context and opens the app's launch URL.
        launch = browser.get(
            "/auth/ehr-launch",
            params={"launch_uri": "http://127.0.0.1:53999/launch", "patient": "child-liam-carter"},
        )
        assert launch.status_code == 302
        params = query(launch.headers["location"])
        assert params["iss"] == server.base
        client = fhirclient.FHIRClient(
            settings={
                "app_id": PUBLIC["client_id"],
                "api_base": params["iss"],
                "launch_token": params["launch"],
                "redirect_uri": "http://127.0.0.1:53999/callback",
                "scope": "launch openid fhirUser patient/*.rs",
            }
        )
        page = _wait_for_login_page(browser, client.authorize_url)
        who = login_for("practitioner")
        consent = submit_login_sync(browser, page.text, who["username"], who["password"])
        assert consent.status_code == 200, consent.text
        done = approve_sync(browser, consent.text, patient="Patient/child-liam-carter")
        assert done.status_code == 302, done.text
    client.handle_callback(done.headers["location"])
    assert client.patient_id == "child-liam-carter"
    assert Patient.read("child-liam-carter", client.server).id == "child-liam-carter"


def test_backend_service_with_python_fhirclient(live_server, tmp_path):
    import uuid

    from fhirclient.models.patient import Patient
    from joserfc import jwt
    from joserfc.jwk import RSAKey

    from tests.integration.auth.conftest import BACKEND

    server = live_server(DATA_DIR=str(tmp_path / "backend"), AUTH_REQUIRED="1", AUTO_SEED="1")
    key = RSAKey.import_key(BACKEND["jwk"])
    token_url = f"http://127.0.0.1:{server.port}/auth/token"
    now = int(time.time())
    assertion = jwt.encode(
        {"alg": "RS384", "typ": "JWT", "kid": key.kid},
        {
            "iss": BACKEND["client_id"],
            "sub": BACKEND["client_id"],
            "aud": token_url,
            "exp": now + 240,
            "jti": str(uuid.uuid4()),
        },
        key,
        algorithms=["RS384"],
    )
    client = fhirclient.FHIRClient(
        settings={
            "app_id": BACKEND["client_id"],
            "api_base": server.base,
            "jwt_token": assertion,
            "scope": "system/*.rs",
        }
    )
    for _ in range(100):  # wait for the seeded client registration
        try:
            client.prepare()
            client.server.authorize()
            break
        except Exception:
            time.sleep(0.2)
    assert client.server.auth.access_token
    # A system token reads any patient.
    for pid in ("sponsor-james-carter", "veteran-samuel-ortiz"):
        assert Patient.read(pid, client.server).id == pid
