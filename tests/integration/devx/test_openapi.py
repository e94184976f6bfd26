"""OpenAPI 3 from the CapabilityStatement (issue 16, developer experience item 3), checked by
openapi-spec-validator and against the CapabilityStatement it comes from."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from openapi_spec_validator import validate

from tests.conftest import make_settings, running_app

ROOT = "http://127.0.0.1:8080"


@pytest.fixture(scope="module")
async def http(mongo_uri: str) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(make_settings(mongo_uri)) as client:
        yield client


async def test_the_document_is_valid_openapi_and_follows_the_capability_statement(
    http: httpx.AsyncClient,
) -> None:
    answer = await http.get(f"{ROOT}/openapi.json")
    assert answer.status_code == 200
    doc = answer.json()
    validate(doc)  # raises on anything OpenAPI 3.0 does not allow
    cap = (await http.get("metadata")).json()
    assert doc["servers"] == [{"url": "http://127.0.0.1:8080/fhir"}]
    for res in cap["rest"][0]["resource"]:
        rt, codes = res["type"], {i["code"] for i in res["interaction"]}
        if "read" in codes:
            assert "get" in doc["paths"][f"/{rt}/{{id}}"], rt
        if "search-type" in codes:
            search = doc["paths"][f"/{rt}"]["get"]
            names = {p["name"] for p in search["parameters"]}
            assert names == {p["name"] for p in res.get("searchParam", [])}, rt
        for op in res.get("operation", []):
            assert any(path.endswith(f"${op['name']}") for path in doc["paths"] if rt in path)
    observation = {p["name"]: p for p in doc["paths"]["/Observation"]["get"]["parameters"]}
    assert observation["code"]["x-fhir-search-type"] == "token"
    assert observation["code"]["description"]
    export = doc["paths"]["/$export"]
    assert {"get", "post"} <= set(export)
    assert "_type" in {p["name"] for p in export["get"]["parameters"]}
    flow = doc["components"]["securitySchemes"]["smart"]["flows"]["authorizationCode"]
    assert flow["authorizationUrl"].endswith("/auth/authorize")


async def test_the_browsable_page(http: httpx.AsyncClient) -> None:
    page = await http.get(f"{ROOT}/openapi")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/Patient/{id}" in page.text and "<script" not in page.text
    landing = await http.get(f"{ROOT}/", headers={"Accept": "application/json"})
    assert landing.json()["links"]["openapi"] == "/openapi"
