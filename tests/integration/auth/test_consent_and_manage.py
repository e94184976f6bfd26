"""Issue 16 item 4 on the seeded server: the consent page names people (never ids) in
plain words, a clinician picks a patient of its care teams from a searchable list, and
/auth/manage lists the apps a person approved and revokes one at once."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.integration.auth.conftest import (
    PUBLIC,
    approve,
    authorize_params,
    exchange,
    login_for,
    login_page,
    pkce,
    post_form,
    query,
    submit_login,
)
from tests.integration.auth.forms import only_form
from tests.integration.seeded import seeded_server

BASE = "http://127.0.0.1:8080"


@pytest.fixture(scope="module")
async def http(mongo_uri: str) -> AsyncIterator[httpx.AsyncClient]:
    async with seeded_server(mongo_uri) as (_, client):
        yield client


def browser(http: httpx.AsyncClient) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=http._transport, base_url=BASE)


def visible_text(page: str) -> str:
    """What a person reads: the page without its tags (ids may sit in value attributes)."""
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


async def consent_for(b: httpx.AsyncClient, role: str, scope: str) -> tuple[httpx.Response, Any]:
    verifier, challenge = pkce()
    params = authorize_params(PUBLIC, scope, challenge)
    page = await login_page(b, params)
    who = login_for(role)
    consent = await submit_login(b, page.text, who["username"], who["password"])
    assert consent.status_code == 200, consent.text
    return consent, (verifier, params)


async def test_consent_names_family_members_in_plain_words(http):
    async with browser(http) as b:
        consent, _ = await consent_for(b, "sponsor", "launch/patient patient/*.rs")
    text = visible_text(consent.text)
    assert "Sophia Rose Carter" in text and "Liam Thomas Carter" in text
    assert "adolescent-sophia-carter" not in text and "child-liam-carter" not in text
    assert "all of the health record" not in text
    assert "everything in the chosen patient's health record" in text


async def test_clinician_chooses_a_care_team_patient_from_a_searchable_list(http):
    async with browser(http) as b:
        consent, (verifier, params) = await consent_for(
            b, "dr.rachel.kim", "launch/patient patient/*.rs"
        )
        form = only_form(consent.text)
        radios = [f.value for f in form.by_type("radio")]
        assert len(radios) >= 2 and not form.by_type("text")  # a list, not an id box
        assert "care teams" in consent.text
        assert not any(r.removeprefix("Patient/") in visible_text(consent.text) for r in radios)
        # Search narrows the list to names with the words; the request stays open.
        pairs = [(k, v) for k, v in form.submit() if k in ("tx",)]
        found = await post_form(b, form.action, [*pairs, ("find", "sophia"), ("search", "1")])
        assert found.status_code == 200, found.text
        narrowed = [f.value for f in only_form(found.text).by_type("radio")]
        assert narrowed and set(narrowed) < set(radios)
        none = await post_form(b, form.action, [*pairs, ("find", "zzzz"), ("search", "1")])
        assert "No patient of your care teams matches" in none.text
        # A patient outside the list is refused; one from it is granted.
        done = await approve(b, found.text, patient=narrowed[0])
        assert done.status_code == 302, done.text
        code = query(done.headers["location"])["code"]
        from tests.integration.auth.conftest import Authorized

        token = await exchange(
            b, Authorized(code, verifier, params["redirect_uri"], params["state"])
        )
        assert token.json()["patient"] == narrowed[0].removeprefix("Patient/")


async def _token(b: httpx.AsyncClient, role: str) -> dict[str, Any]:
    consent, (verifier, params) = await consent_for(
        b, role, "openid fhirUser user/*.rs offline_access"
    )
    done = await approve(b, consent.text)
    from tests.integration.auth.conftest import Authorized

    code = query(done.headers["location"])["code"]
    r = await exchange(b, Authorized(code, verifier, params["redirect_uri"], params["state"]))
    assert r.status_code == 200, r.text
    return dict(r.json())


async def manage_sign_in(b: httpx.AsyncClient, role: str) -> httpx.Response:
    page = await b.get("/auth/manage")
    who = login_for(role)
    return await submit_login(b, page.text, who["username"], who["password"])


async def test_manage_lists_approved_apps_and_revokes_one_at_once(http):
    async with browser(http) as b:
        tokens = await _token(b, "spouse")
        bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
        assert (await b.get("/fhir/Patient", headers=bearer)).status_code == 200

    other = browser(http)  # someone else's session cannot revoke it
    listing = await manage_sign_in(other, "sponsor")
    assert listing.status_code == 200, listing.text

    async with browser(http) as b:
        bad = await b.post(
            "/auth/manage/login",
            data={"username": login_for("spouse")["username"], "password": "wrong"},
        )
        assert bad.status_code == 401 and "password" in bad.text
        listing = await manage_sign_in(b, "spouse")
        assert listing.status_code == 200, listing.text
        text = visible_text(listing.text)
        assert "MHS portal sample app" in text and "last used" in text
        assert "See and search everything in the health records you may open" in text
        revoke = [f for f in _forms(listing.text) if f.action == "/auth/manage/revoke"]
        assert revoke
        target = revoke[0]
        grant = next(f.value for f in target.fields if f.name == "grant")

        # The other user's session: the grant is not theirs (404), nothing changes.
        sponsor_page = (await other.get("/auth/manage")).text
        token_field = next(
            f.value for form in _forms(sponsor_page) for f in form.fields if f.name == "form_token"
        )
        refused = await other.post(
            "/auth/manage/revoke", data={"form_token": token_field, "grant": grant}
        )
        assert refused.status_code == 404
        assert (await b.get("/fhir/Patient", headers=bearer)).status_code == 200
        forged = await b.post("/auth/manage/revoke", data={"form_token": "x", "grant": grant})
        assert forged.status_code == 403

        done = await post_form(b, target.action, target.submit())
        assert done.status_code == 200 and "can no longer reach your record" in done.text
        # At once: the access token and the refresh token stop working.
        assert (await b.get("/fhir/Patient", headers=bearer)).status_code == 401
        refreshed = await b.post(
            "/auth/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": tokens["refresh_token"],
                "client_id": PUBLIC["client_id"],
            },
        )
        assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"
        assert grant not in (await b.get("/auth/manage")).text
    await other.aclose()


def _forms(page: str) -> list[Any]:
    from tests.integration.auth.forms import forms

    return forms(page)
