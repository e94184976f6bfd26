"""Leak tests for what issue 16 added that shows patient data outside the FHIR API: the
consent page's patient picker (names) and the portal's static files. Expectations come from
the seed's declared facts (logins.json `acts_for`) and the care-team rule, never from the
page under test. The portal app's pages themselves are leak-tested in Chromium
(tests/e2e/portal/test_portal_app.py)."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from fhir_server.access import care_team
from fhir_server.access.policy import today
from fhir_server.consent_directory import display_name
from seed_data.population import build_population
from tests.integration.auth.conftest import (
    PUBLIC,
    authorize_params,
    login_for,
    login_page,
    pkce,
    submit_login,
)
from tests.integration.auth.forms import only_form
from tests.integration.seeded import seeded_server

BASE = "http://127.0.0.1:8080"
NAMES = {
    f"Patient/{r['id']}": display_name(r)
    for r in build_population(today())
    if r["resourceType"] == "Patient"
}


@pytest.fixture(scope="module")
async def server(mongo_uri: str) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    async with seeded_server(mongo_uri) as pair:
        yield pair


async def picker(http: httpx.AsyncClient, role: str) -> tuple[list[str], str]:
    async with httpx.AsyncClient(transport=http._transport, base_url=BASE) as b:
        _, challenge = pkce()
        page = await login_page(
            b, authorize_params(PUBLIC, "launch/patient patient/*.rs", challenge)
        )
        who = login_for(role)
        consent = await submit_login(b, page.text, who["username"], who["password"])
    assert consent.status_code == 200, consent.text
    radios = [f.value for f in only_form(consent.text).by_type("radio")]
    return radios, html.unescape(re.sub(r"<[^>]+>", " ", consent.text))


@pytest.mark.parametrize("role", ["sponsor", "spouse", "adult-dependent-no-grant", "cac-user"])
async def test_a_patient_picks_only_among_those_they_act_for(server, role):
    _, http = server
    who = login_for(role)
    allowed = {who["fhirUser"], *who["acts_for"]}
    radios, text = await picker(http, role)
    assert set(radios or [who["fhirUser"]]) <= allowed
    for ref, name in NAMES.items():
        if ref not in allowed:
            assert name not in text, f"{role}'s consent page names {ref}"


async def test_a_clinician_lists_exactly_its_care_team_patients(server):
    app, http = server
    who = login_for("dr.rachel.kim")
    expected = await care_team.care_team_patients(
        app.state.ctx.store, care_team.load_table(), who["fhirUser"], today()
    )
    radios, text = await picker(http, "dr.rachel.kim")
    assert sorted(radios) == sorted(expected) and expected
    for ref, name in NAMES.items():
        if ref not in expected:
            assert name not in text, f"the clinician's list names {ref}, not of its teams"


@pytest.mark.parametrize(
    "path",
    [
        "/portal/../fhir_server/config.py",
        "/portal/node_modules/fhirclient/package.json",
        "/portal/package.json",
        "/portal/%2e%2e/README.md",
    ],
)
async def test_the_portal_serves_only_its_own_files(server, path):
    _, http = server
    r = await http.get(path)
    assert r.status_code == 404
    assert (await http.get("/portal/app.js")).status_code in (200, 503)
