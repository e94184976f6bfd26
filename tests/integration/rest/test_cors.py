"""CORS for browser SMART apps, and `Cache-Control: no-store` on health data.

One app (tokens off, so the FHIR answers need no login) with the development clients
registered: a loopback redirect URI allows http://127.0.0.1 on any port, CORS_ORIGINS adds
one more origin, and anything else gets no grant.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import httpx
import pytest

from tests.conftest import FHIR_JSON, make_settings, patient, running_app

APP_ORIGIN = "http://127.0.0.1:5173"  # the public client's loopback redirect URI, other port
CONFIGURED = "https://portal.example.org"
STRANGER = "https://evil.example"
AUTH_ENDPOINTS = ("/auth/token", "/auth/introspect", "/auth/revoke")
ORIGIN = "http://127.0.0.1:8080"  # the server's own; httpx would put /fhir before a bare path
EXPOSED = ("location", "etag", "content-location", "x-progress", "retry-after")


@pytest.fixture(scope="module")
async def client(mongo_uri: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(mongo_uri, cors_origins=(CONFIGURED,))
    async with running_app(settings) as c:
        server = c.app.state.smart_auth  # type: ignore[attr-defined]
        await anyio.to_thread.run_sync(server.seed_development)
        r = await c.put("Patient/cors1", json=patient(id="cors1"), headers=FHIR_JSON)
        assert r.status_code == 201
        yield c


def preflight(origin: str, method: str = "GET") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type, prefer",
    }


async def test_preflights_grant_registered_and_configured_origins_only(
    client: httpx.AsyncClient,
) -> None:
    for path in ("Patient", "Patient/cors1", *(ORIGIN + p for p in AUTH_ENDPOINTS)):
        for origin in (APP_ORIGIN, "http://127.0.0.1:41234", CONFIGURED):
            r = await client.options(path, headers=preflight(origin, "POST"))
            assert r.status_code == 204, (path, origin, r.text)
            assert r.headers["access-control-allow-origin"] == origin
            assert "POST" in r.headers["access-control-allow-methods"]
            assert (
                r.headers["access-control-allow-headers"] == "authorization, content-type, prefer"
            )
            assert "access-control-allow-credentials" not in r.headers
            assert int(r.headers["access-control-max-age"]) > 0
        for origin in (STRANGER, "http://localhost:5173", "null", APP_ORIGIN + "/callback"):
            r = await client.options(path, headers=preflight(origin))
            assert r.status_code == 204
            assert "access-control-allow-origin" not in r.headers, (path, origin)
            assert "Origin" in r.headers["vary"]


async def test_responses_carry_the_grant_and_expose_fhir_headers(
    client: httpx.AsyncClient,
) -> None:
    read = await client.get("Patient/cors1", headers={"Origin": APP_ORIGIN})
    assert read.status_code == 200
    assert read.headers["access-control-allow-origin"] == APP_ORIGIN
    exposed = {h.strip().lower() for h in read.headers["access-control-expose-headers"].split(",")}
    assert set(EXPOSED) <= exposed
    assert "Origin" in read.headers["vary"]
    created = await client.post(
        "Patient", json=patient(), headers={**FHIR_JSON, "Origin": CONFIGURED}
    )
    assert created.status_code == 201
    assert created.headers["access-control-allow-origin"] == CONFIGURED
    assert created.headers["location"]
    stranger = await client.get("Patient/cors1", headers={"Origin": STRANGER})
    assert stranger.status_code == 200  # CORS is the browser's rule, not an access rule
    assert "access-control-allow-origin" not in stranger.headers
    # The token endpoint: the checked origin instead of the old `*`.
    token = await client.post(
        ORIGIN + "/auth/token", data={"grant_type": "nope"}, headers={"Origin": APP_ORIGIN}
    )
    assert token.status_code == 400
    assert token.headers["access-control-allow-origin"] == APP_ORIGIN
    token = await client.post(
        ORIGIN + "/auth/token", data={"grant_type": "nope"}, headers={"Origin": STRANGER}
    )
    assert "access-control-allow-origin" not in token.headers
    # Public discovery stays readable from anywhere.
    disco = await client.get(".well-known/smart-configuration", headers={"Origin": STRANGER})
    assert disco.headers["access-control-allow-origin"] == "*"
    disco = await client.get(".well-known/smart-configuration", headers={"Origin": APP_ORIGIN})
    assert disco.headers["access-control-allow-origin"] == APP_ORIGIN


async def test_health_data_is_never_stored_by_caches(client: httpx.AsyncClient) -> None:
    answers = [
        await client.get("Patient/cors1"),
        await client.get("Patient", params={"_id": "cors1"}),
        await client.get("Patient/cors1/_history"),
        await client.get("Patient/missing"),  # an error can name data too
        await client.get("Patient", params={"birthdate": "nonsense"}),
        await client.put("Patient/cors1", json=patient(id="cors1"), headers=FHIR_JSON),
    ]
    for r in answers:
        assert r.headers["cache-control"] == "no-store", (r.request.url, r.status_code)
        assert r.headers["pragma"] == "no-cache"
    metadata = await client.get("metadata")
    assert "no-store" not in metadata.headers.get("cache-control", "")
