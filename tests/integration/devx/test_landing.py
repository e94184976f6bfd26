"""The landing page at `/` (issue 16, developer experience item 2): HTML for a browser, the
same links as JSON for a client, every link answering 200, no seed passwords anywhere."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator

import httpx
import pytest

from fhir_server.devx.landing import LOGINS_FILE
from tests.conftest import make_settings, running_app

# running_app's client has the FHIR base as base URL: the site root is named whole.
ROOT = "http://127.0.0.1:8080"


@pytest.fixture(scope="module")
async def http(mongo_uri: str) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(make_settings(mongo_uri)) as client:
        yield client


def passwords() -> list[str]:
    return [x["password"] for x in json.loads(LOGINS_FILE.read_text())["logins"]]


async def test_the_html_page_links_resolve_and_list_logins_without_passwords(
    http: httpx.AsyncClient,
) -> None:
    page = await http.get(
        f"{ROOT}/", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    )
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    text = page.text
    assert "http://127.0.0.1:8080/fhir" in text
    assert "james.carter" in text and "robert.alvarez" in text
    assert not any(pw in text for pw in passwords())
    assert "<script" not in text and "http://" not in re.sub(r"<code>[^<]*</code>", "", text)
    hrefs = re.findall(r'href="([^"]+)"', text)
    for wanted in ("/fhir/metadata", "/fhir/.well-known/smart-configuration", "/portal/", "/docs/"):
        assert wanted in hrefs
    for href in hrefs:
        answer = await http.get(ROOT + href)
        assert answer.status_code == 200, (href, answer.status_code)
    docs = await http.get(f"{ROOT}/docs/")
    for href in re.findall(r'href="(/docs/[^"]+)"', docs.text):
        answer = await http.get(ROOT + href)
        assert answer.status_code == 200 and answer.headers["content-type"].startswith(
            "text/markdown"
        )


async def test_a_json_accept_gets_the_same_links(http: httpx.AsyncClient) -> None:
    answer = await http.get(f"{ROOT}/", headers={"Accept": "application/json"})
    assert answer.status_code == 200
    doc = answer.json()
    assert doc["links"]["fhirBase"] == "http://127.0.0.1:8080/fhir"
    assert doc["links"]["capabilityStatement"] == "/fhir/metadata"
    assert {x["username"] for x in doc["developmentLogins"]} >= {"james.carter"}
    assert not any(pw in answer.text for pw in passwords())


async def test_docs_serve_only_the_files_of_docs(http: httpx.AsyncClient) -> None:
    for name in ("../README.md", "..%2FREADME.md", "nope.md", "rest.md%00"):
        assert (await http.get(f"{ROOT}/docs/{name}")).status_code == 404


async def test_production_lists_no_logins(mongo_uri: str) -> None:
    async with running_app(make_settings(mongo_uri, production=True)) as client:
        page = await client.get(f"{ROOT}/")
        assert page.status_code == 200
        assert "james.carter" not in page.text
        doc = (await client.get(f"{ROOT}/", headers={"Accept": "application/json"})).json()
        assert "developmentLogins" not in doc
