"""Authorization code flow with PKCE: standalone, EHR, confidential, errors (SMART 2.2)."""

from __future__ import annotations

import httpx

from smart_auth import allows, parse_scopes
from tests.integration.auth.conftest import (
    CONFIDENTIAL,
    FHIR,
    PUBLIC,
    approve,
    authorize,
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


async def bearer_get(http: httpx.AsyncClient, token: str) -> httpx.Response:
    return await http.get("/fhir/Patient", headers={"Authorization": f"Bearer {token}"})


async def test_login_page_contract(env):
    _, challenge = pkce()
    page = await login_page(env.http, authorize_params(PUBLIC, "openid", challenge))
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    form = only_form(page.text)
    assert form.method == "post"
    text, password = form.by_type("text"), form.by_type("password")
    assert len(text) == 1 and len(password) == 1
    assert form.labels[text[0].id] == "Username"
    assert form.labels[password[0].id] == "Password"


async def test_standalone_launch_token_response(env):
    auth = await authorize(
        env.http, "sponsor", "openid fhirUser launch/patient patient/*.rs offline_access"
    )
    r = await exchange(env.http, auth)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["token_type"] == "Bearer"
    assert body["patient"] == "sponsor-james-carter"
    assert body["need_patient_banner"] is True
    assert body["smart_style_url"].startswith("http://127.0.0.1:8080/")
    assert body["scope"] == "openid fhirUser launch/patient patient/*.rs offline_access"
    assert body["refresh_token"] and body["id_token"]
    me = await bearer_get(env.http, body["access_token"])
    assert me.status_code == 200
    ctx = me.json()
    assert ctx["acr"] == "dslogon-premium"
    assert ctx["patient"] == "sponsor-james-carter"
    assert "Patient/child-liam-carter" in ctx["acts_for"]


async def test_id_token_is_rs256_with_fhir_user(env):
    from joserfc import jwt
    from joserfc.jwk import KeySet

    auth = await authorize(
        env.http, "spouse", "openid fhirUser patient/Patient.r launch/patient", nonce="n-123"
    )
    body = (await exchange(env.http, auth)).json()
    jwks = (await env.http.get("/auth/jwks")).json()
    token = jwt.decode(body["id_token"], KeySet.import_key_set(jwks), algorithms=["RS256"])
    assert token.header["alg"] == "RS256"
    assert token.claims["aud"] == PUBLIC["client_id"]
    assert token.claims["nonce"] == "n-123"
    assert token.claims["fhirUser"] == FHIR + "/Patient/spouse-maria-carter"
    assert token.claims["iss"] == "http://127.0.0.1:8080"


async def test_sponsor_picks_a_dependent(env):
    auth = await authorize(
        env.http, "sponsor", "launch/patient patient/*.rs", patient="Patient/child-liam-carter"
    )
    body = (await exchange(env.http, auth)).json()
    assert body["patient"] == "child-liam-carter"


async def test_patient_not_offered_is_refused(env):
    _, challenge = pkce()
    page = await login_page(
        env.http, authorize_params(PUBLIC, "launch/patient patient/*.rs", challenge)
    )
    who = login_for("sponsor")
    consent = await submit_login(env.http, page.text, who["username"], who["password"])
    form = only_form(consent.text)
    radios = [f.value for f in form.by_type("radio")]
    assert "Patient/sponsor-james-carter" in radios and "Patient/child-liam-carter" in radios
    assert "Patient/dependent-emma-carter" not in radios
    pairs = [(k, v) for k, v in form.submit(button="approve") if k != "patient"]
    pairs.append(("patient", "Patient/dependent-emma-carter"))
    r = await post_form(env.http, form.action, pairs)
    assert r.status_code == 400
    assert "location" not in r.headers


async def test_managed_account_acts_only_for_its_beneficiary(env):
    auth = await authorize(env.http, "managed-account", "launch/patient patient/*.rs")
    body = (await exchange(env.http, auth)).json()
    assert body["patient"] == "managed-eleanor-brooks"


async def test_consent_untick_resource_and_offline(env):
    scope = "launch/patient patient/Observation.rs patient/Appointment.rs offline_access"
    auth = await authorize(
        env.http, "sponsor", scope, untick=("patient/Observation.rs", "offline_access")
    )
    body = (await exchange(env.http, auth)).json()
    assert body["scope"] == "launch/patient patient/Appointment.rs"
    assert "refresh_token" not in body


async def test_consent_page_lists_access_in_plain_words(env):
    _, challenge = pkce()
    scope = "launch/patient patient/AllergyIntolerance.rs offline_access"
    page = await login_page(env.http, authorize_params(PUBLIC, scope, challenge))
    who = login_for("sponsor")
    consent = await submit_login(env.http, page.text, who["username"], who["password"])
    assert "allergies" in consent.text
    assert "Offline access" in consent.text
    form = only_form(consent.text)
    assert [f.name for f in form.fields if f.type == "submit" and f.name == "approve"]


async def test_deny_redirects_with_access_denied_and_state(env):
    verifier, challenge = pkce()
    params = authorize_params(PUBLIC, "patient/*.rs launch/patient", challenge)
    page = await login_page(env.http, params)
    who = login_for("sponsor")
    consent = await submit_login(env.http, page.text, who["username"], who["password"])
    form = only_form(consent.text)
    r = await post_form(env.http, form.action, form.submit(button="deny"))
    assert r.status_code == 302
    q = query(r.headers["location"])
    assert q["error"] == "access_denied" and q["state"] == params["state"]


async def test_authorize_post(env):
    _, challenge = pkce()
    params = authorize_params(PUBLIC, "patient/*.rs", challenge)
    r = await post_form(env.http, "/auth/authorize", list(params.items()))
    assert r.status_code == 200
    only_form(r.text)


async def test_confidential_client_secret_basic(env):
    auth = await authorize(
        env.http, "cac-user", "launch/patient patient/*.cruds", client=CONFIDENTIAL
    )
    r = await exchange(env.http, auth, client=CONFIDENTIAL)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["patient"] == "cac-marcus-bell"
    ctx = (await bearer_get(env.http, body["access_token"])).json()
    assert ctx["acr"] == "cac"


async def test_ehr_launch(env):
    launch = await env.run(lambda: env.server.launches.create(patient="child-liam-carter"))
    auth = await authorize(
        env.http, "practitioner", "launch openid fhirUser user/*.rs patient/*.rs", launch=launch
    )
    body = (await exchange(env.http, auth)).json()
    assert body["patient"] == "child-liam-carter"
    assert body["need_patient_banner"] is False


async def test_ehr_launch_unknown_launch_is_refused(env):
    _, challenge = pkce()
    params = authorize_params(PUBLIC, "launch patient/*.rs", challenge, launch="no-such-launch")
    r = await env.http.get("/auth/authorize", params=params)
    assert r.status_code == 302
    assert query(r.headers["location"])["error"] == "invalid_request"


async def test_dev_ehr_launch_redirects_to_app(env):
    r = await env.http.get(
        "/auth/ehr-launch",
        params={"launch_uri": "http://127.0.0.1:9999/launch", "patient": "child-liam-carter"},
    )
    assert r.status_code == 302
    q = query(r.headers["location"])
    assert q["iss"] == FHIR and q["launch"]
    bad = await env.http.get(
        "/auth/ehr-launch", params={"launch_uri": "https://evil.example/launch", "patient": "x"}
    )
    assert bad.status_code == 400


async def test_basic_login_is_capped(env):
    scope = "launch/patient patient/*.cruds patient/Observation.rs"
    auth = await authorize(env.http, "basic-user", scope)
    body = (await exchange(env.http, auth)).json()
    granted = parse_scopes(body["scope"])
    assert {s.resource_type for s in granted} == {
        "Patient",
        "Appointment",
        "Immunization",
        "AllergyIntolerance",
    }
    assert all(s.permissions <= frozenset("rs") for s in granted)
    assert not allows(granted, "Observation", "read")
    assert not allows(granted, "Patient", "update")
    assert not allows(granted, "Appointment", "create")
    assert allows(granted, "Immunization", "search")


async def test_query_qualified_scope_survives(env):
    lab = "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory"
    auth = await authorize(env.http, "sponsor", "launch/patient " + lab)
    body = (await exchange(env.http, auth)).json()
    assert lab in body["scope"].split()


async def test_consent_without_the_browser_cookie_is_refused(env):
    _, challenge = pkce()
    page = await login_page(env.http, authorize_params(PUBLIC, "patient/*.rs", challenge))
    who = login_for("sponsor")
    consent = await submit_login(env.http, page.text, who["username"], who["password"])
    form = only_form(consent.text)
    async with env.fresh() as other:
        r = await post_form(other, form.action, form.submit(button="approve"))
    assert r.status_code == 400 and "location" not in r.headers
    # The real browser can still finish.
    assert (await approve(env.http, consent.text)).status_code == 302
