"""The landing page, the OpenAPI document (validated by openapi-spec-validator) and its
pages, and the JSON request log, on the seeded server with tokens required."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from openapi_spec_validator import validate

from fhir_server.devx.json_log import REQUESTS
from fhir_server.devx.token import TokenError, issue
from tests.integration.auth.conftest import BASE, PUBLIC, authorize, exchange
from tests.integration.seeded import seeded_server


@pytest.fixture(scope="module")
async def server(mongo_uri: str) -> AsyncIterator[Any]:
    async with seeded_server(mongo_uri) as (app, http):
        yield app, http


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(record.getMessage()))


@pytest.fixture
def request_lines() -> Any:
    handler = Lines()
    log = logging.getLogger(REQUESTS)
    log.addHandler(handler)
    yield handler.lines
    log.removeHandler(handler)


async def test_landing_page_links_and_dev_logins(server) -> None:
    _, http = server
    page = await http.get("/", headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    for href in (
        "/fhir/metadata",
        "/fhir/.well-known/smart-configuration",
        "/openapi.json",
        "/openapi",
        "/portal/",
        "/docs/README.md",
    ):
        assert f'href="{href}"' in page.text, href
    assert "james.carter" in page.text and "fhir-server token" in page.text
    readme = await http.get("/docs/README.md")
    assert readme.status_code == 200 and "fhir-server" in readme.text
    assert (await http.get("/docs/..%2Fpyproject.toml")).status_code == 404


async def test_root_for_json_clients(server) -> None:
    _, http = server
    fhir = await http.get("/", headers={"Accept": "application/fhir+json"})
    assert fhir.status_code == 200
    assert fhir.json()["resourceType"] == "CapabilityStatement"
    assert fhir.headers["content-location"].endswith("/fhir/metadata")
    plain = await http.get("/", headers={"Accept": "application/json"})
    assert plain.json()["capability_statement"].endswith("/fhir/metadata")


async def test_openapi_document_is_valid_and_says_what_the_server_does(server) -> None:
    _, http = server
    r = await http.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    validate(doc)  # raises on any violation of the OpenAPI 3.0 schema
    search = doc["paths"]["/Observation"]["get"]
    code = next(p for p in search["parameters"] if p.get("name") == "code")
    assert code["x-fhir-search-type"] == "token" and code["description"]
    everything = doc["paths"]["/Patient/{id}/$everything"]["get"]
    names = {p["name"] for p in everything["x-fhir-parameters"]}
    assert {"start", "end", "_since"} & names
    assert "post" in doc["paths"]["/$export"]
    assert doc["components"]["securitySchemes"]["smart"]["type"] == "oauth2"
    index = await http.get("/openapi")
    assert index.status_code == 200 and 'href="/openapi/Patient"' in index.text
    patient = await http.get("/openapi/Patient")
    assert patient.status_code == 200 and "birthdate" in patient.text
    assert (await http.get("/openapi/NoSuchType")).status_code == 404


async def test_one_json_line_per_request_without_values(server, request_lines) -> None:
    _, http = server
    auth = await authorize(http, "sponsor", "openid fhirUser patient/*.rs")
    token = (await exchange(http, auth, PUBLIC)).json()["access_token"]
    request_lines.clear()
    r = await http.get(
        "/fhir/Patient/sponsor-james-carter",
        params={"_elements": "name"},
        headers={"Authorization": f"Bearer {token}", "X-Request-Id": "trace-123"},
    )
    assert r.status_code == 200
    assert r.headers["x-request-id"] == "trace-123"
    s = await http.get(
        "/fhir/Patient",
        params={"family": "Carter", "birthdate": "ge1980"},
        headers={"Authorization": f"Bearer {token}", "X-Request-Id": "bad id\n{}"},
    )
    assert s.status_code == 200
    assert s.headers["x-request-id"] != "bad id\n{}"
    read, search = request_lines[-2:]
    assert read["request_id"] == "trace-123"
    assert read["route"] == "/fhir/Patient/{id}" and read["params"] == ["_elements"]
    assert read["status"] == 200 and read["method"] == "GET"
    assert read["client_id"] == PUBLIC["client_id"] and read["latency_ms"] >= 0
    assert search["request_id"] == s.headers["x-request-id"]
    assert search["params"] == ["family", "birthdate"]
    text = json.dumps(request_lines)
    for value in ("sponsor-james-carter", "Carter", "ge1980", token):
        assert value not in text


class _Bridge(httpx.BaseTransport):
    """A synchronous transport onto the ASGI app, for `issue` run in a worker thread."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
                r = await client.send(
                    client.build_request(
                        request.method, request.url, headers=request.headers, content=request.read()
                    )
                )
                await r.aread()
                return httpx.Response(r.status_code, headers=r.headers, content=r.content)

        return anyio.from_thread.run(send)


async def test_token_command_drives_the_real_flow(server) -> None:
    app, http = server
    settings = app.state.ctx.settings
    token = await anyio.to_thread.run_sync(
        lambda: issue(
            settings,
            "james.carter",
            "patient/*.rs",
            patient="child-liam-carter",
            transport=_Bridge(app),
        )
    )
    assert token["patient"] == "child-liam-carter"
    assert "patient/*.rs" in token["scope"]
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    r = await http.get("/fhir/Patient/child-liam-carter", headers=headers)
    assert r.status_code == 200
    assert (
        await http.get("/fhir/Patient/sponsor-james-carter", headers=headers)
    ).status_code == 404
    with pytest.raises(TokenError, match="not among the patients"):
        await anyio.to_thread.run_sync(
            lambda: issue(
                settings,
                "james.carter",
                "patient/*.rs",
                patient="piv-karen-liu",
                transport=_Bridge(app),
            )
        )
    production = dataclasses.replace(settings, production=True)
    with pytest.raises(TokenError, match="development only"):
        issue(production, "james.carter", "patient/*.rs")
