"""Negative cases: bad codes, clients, PKCE, redirect URIs, tokens and grant types."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import anyio

from smart_auth.rfc9068 import issue_access_token
from tests.integration.auth.conftest import (
    CONFIDENTIAL,
    FHIR,
    PUBLIC,
    authorize,
    authorize_params,
    exchange,
    pkce,
    query,
)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def protected(env, token: str | None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await env.http.get("/fhir/Patient", headers=headers)


async def test_no_token_is_401_with_challenge(env):
    r = await protected(env, None)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith('Bearer realm="http://127.0.0.1:8080/fhir"')
    assert "error=" not in r.headers["www-authenticate"]  # RFC 6750 section 3.1
    assert r.json()["resourceType"] == "OperationOutcome"


async def test_garbage_token_is_invalid_token(env):
    r = await protected(env, "not-a-jwt")
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["www-authenticate"]


async def test_bad_code_is_invalid_grant(env):
    verifier, _ = pkce()
    r = await env.http.post(
        "/auth/token",
        data={
            "grant_type": "authorization_code",
            "code": "no-such-code",
            "redirect_uri": "http://127.0.0.1:1/callback",
            "client_id": PUBLIC["client_id"],
            "code_verifier": verifier,
        },
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


async def test_reused_code_is_refused_and_revokes_first_tokens(env):
    auth = await authorize(env.http, "spouse", "launch/patient patient/*.rs")
    first = await exchange(env.http, auth)
    assert first.status_code == 200
    again = await exchange(env.http, auth)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert (await protected(env, first.json()["access_token"])).status_code == 401


async def test_unknown_client_is_401(env):
    auth = await authorize(env.http, "spouse", "patient/*.rs")
    r = await env.http.post(
        "/auth/token",
        data={
            "grant_type": "authorization_code",
            "code": auth.code,
            "redirect_uri": auth.redirect_uri,
            "client_id": "no-such-client",
            "code_verifier": auth.verifier,
        },
    )
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"


async def test_wrong_client_secret_is_401(env):
    auth = await authorize(env.http, "spouse", "patient/*.rs", client=CONFIDENTIAL)
    bad = {**CONFIDENTIAL, "client_secret": "wrong"}
    r = await exchange(env.http, auth, client=bad)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    assert "www-authenticate" in r.headers


async def test_confidential_client_without_secret_is_401(env):
    auth = await authorize(env.http, "spouse", "patient/*.rs", client=CONFIDENTIAL)
    r = await exchange(env.http, auth, client={**CONFIDENTIAL, "client_secret": None})
    assert r.status_code == 401


async def test_code_of_another_client_is_invalid_grant(env):
    auth = await authorize(env.http, "spouse", "patient/*.rs", client=CONFIDENTIAL)
    r = await exchange(env.http, auth, client=PUBLIC)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


async def test_pkce_verifier_missing_blank_wrong_or_plain(env):
    for verifier, error in [
        (None, "invalid_request"),
        ("", "invalid_request"),
        ("x" * 43, "invalid_grant"),
    ]:
        auth = await authorize(env.http, "spouse", "patient/*.rs")
        r = await exchange(env.http, auth, code_verifier=verifier)
        assert r.status_code == 400, verifier
        assert r.json()["error"] == error, verifier
    # "plain": the client sends the challenge itself as the verifier.
    auth = await authorize(env.http, "spouse", "patient/*.rs")
    _, challenge = pkce()
    auth.verifier = challenge
    r = await exchange(env.http, auth)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


async def test_authorize_refuses_plain_or_missing_challenge(env):
    _, challenge = pkce()
    for change in (
        {"code_challenge_method": "plain"},
        {"code_challenge_method": ""},
        {"code_challenge": ""},
    ):
        params = authorize_params(PUBLIC, "patient/*.rs", challenge)
        params.update(change)
        params = {k: v for k, v in params.items() if v}
        r = await env.http.get("/auth/authorize", params=params)
        assert r.status_code == 302, change
        q = query(r.headers["location"])
        assert q["error"] == "invalid_request" and q["state"] == params["state"]


async def test_unregistered_redirect_uri_gets_error_page_not_redirect(env):
    _, challenge = pkce()
    for uri in [
        "https://evil.example/callback",
        "http://127.0.0.1:8000/other-path",
        "http://localhost:8000/callback",
        "http://127.0.0.1.evil.example/callback",
    ]:
        params = authorize_params(PUBLIC, "patient/*.rs", challenge, redirect_uri=uri)
        r = await env.http.get("/auth/authorize", params=params)
        assert r.status_code == 400, uri
        assert "location" not in r.headers
        assert r.headers["content-type"].startswith("text/html")


async def test_loopback_redirect_any_port(env):
    for port in (1024, 65000):
        auth = await authorize(
            env.http, "spouse", "patient/*.rs", redirect_uri=f"http://127.0.0.1:{port}/callback"
        )
        assert (await exchange(env.http, auth)).status_code == 200


async def test_unknown_client_at_authorize_gets_error_page(env):
    _, challenge = pkce()
    params = authorize_params({"client_id": "nobody"}, "patient/*.rs", challenge)
    r = await env.http.get("/auth/authorize", params=params)
    assert r.status_code == 400 and "location" not in r.headers


async def test_wrong_aud_is_refused_with_state(env):
    _, challenge = pkce()
    params = authorize_params(PUBLIC, "patient/*.rs", challenge, aud="https://other.example/fhir")
    r = await env.http.get("/auth/authorize", params=params)
    assert r.status_code == 302
    q = query(r.headers["location"])
    assert q["error"] == "invalid_request" and q["state"] == params["state"]


async def test_bad_grant_type(env):
    r = await env.http.post(
        "/auth/token", data={"grant_type": "password", "client_id": PUBLIC["client_id"]}
    )
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"
    assert r.headers["cache-control"] == "no-store"


async def test_token_endpoint_needs_a_form(env):
    r = await env.http.post("/auth/token", json={"grant_type": "authorization_code"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"


def _claims(env) -> dict:
    now = int(time.time())
    return {
        "iss": env.server.config.issuer,
        "sub": "Patient/x",
        "aud": FHIR,
        "exp": now + 600,
        "iat": now,
        "jti": "forged",
        "client_id": PUBLIC["client_id"],
        "scope": "patient/*.rs",
    }


async def test_alg_none_is_rejected(env):
    header = b64(json.dumps({"alg": "none", "typ": "at+jwt"}).encode())
    token = f"{header}.{b64(json.dumps(_claims(env)).encode())}."
    r = await protected(env, token)
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]


async def test_hs256_signed_with_public_key_is_rejected(env):
    key = env.server.keys.current
    public_pem = key.as_pem(private=False)
    header = b64(json.dumps({"alg": "HS256", "typ": "at+jwt", "kid": key.kid}).encode())
    payload = b64(json.dumps(_claims(env)).encode())
    sig = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    r = await protected(env, f"{header}.{payload}.{b64(sig)}")
    assert r.status_code == 401


async def test_expired_token_is_rejected(env):
    server = env.server

    def issue() -> str:
        return issue_access_token(
            server.keys,
            server.store,
            server.config,
            client_id=PUBLIC["client_id"],
            scope="patient/*.rs",
            grant_id="g",
            subject=None,
            lifetime_s=-120,
        )

    token = await anyio.to_thread.run_sync(issue)
    assert (await protected(env, token)).status_code == 401


async def test_token_for_another_audience_is_rejected(env):
    from dataclasses import replace

    server = env.server
    other = replace(server.config, base_url="https://other.example/fhir")

    def issue() -> str:
        return issue_access_token(
            server.keys,
            server.store,
            other,
            client_id=PUBLIC["client_id"],
            scope="patient/*.rs",
            grant_id="g",
            subject=None,
            lifetime_s=300,
        )

    assert (await protected(env, await anyio.to_thread.run_sync(issue))).status_code == 401


async def test_tampered_signature_is_rejected(env):
    auth = await authorize(env.http, "spouse", "patient/*.rs")
    token = (await exchange(env.http, auth)).json()["access_token"]
    head, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["scope"] = "patient/*.cruds"
    forged = f"{head}.{b64(json.dumps(claims).encode())}.{sig}"
    assert (await protected(env, forged)).status_code == 401
    assert (await protected(env, token)).status_code == 200


async def test_port_zero_loopback_redirect_is_refused(env):
    _, challenge = pkce()
    params = authorize_params(
        PUBLIC, "openid", challenge, redirect_uri="http://127.0.0.1:0/callback"
    )
    r = await env.http.get("/auth/authorize", params=params, follow_redirects=False)
    assert r.status_code == 400
    assert "location" not in r.headers  # an error page, never a redirect there
    assert r.headers["content-type"].startswith("text/html")


async def test_quotes_in_authorize_parameters_get_the_error_page(env):
    """A `"` in redirect_uri or response_type once answered a plain-text 500."""
    _, challenge = pkce()
    for name, value in (
        ("redirect_uri", 'http://127.0.0.1:53682/callback"'),
        ("redirect_uri", '"'),
        ("response_type", 'code"'),
        ("response_type", '"'),
        ("scope", 'openid"'),
        ("state", '"><script>'),
        ("client_id", '"'),
    ):
        params = {**authorize_params(PUBLIC, "openid", challenge), name: value}
        for method in ("GET", "POST"):
            if method == "GET":
                r = await env.http.get("/auth/authorize", params=params, follow_redirects=False)
            else:
                r = await env.http.post("/auth/authorize", data=params, follow_redirects=False)
            assert r.status_code < 500, (name, value, method, r.text[:300])
            if r.status_code != 302:
                assert r.headers["content-type"].startswith("text/html"), (name, r.text[:200])
                assert "<script>" not in r.text


async def test_quotes_in_token_endpoint_parameters_are_oauth_errors(env):
    for data in (
        {"grant_type": '"'},
        {"grant_type": "authorization_code", "code": '"', "redirect_uri": '"', "client_id": '"'},
        {"grant_type": "refresh_token", "refresh_token": '"', "scope": '"', "client_id": '"'},
        {"grant_type": "client_credentials", "scope": 'system/*.rs"'},
    ):
        r = await env.http.post("/auth/token", data=data)
        assert 400 <= r.status_code < 500, (data, r.text[:300])
        assert "error" in r.json()
    for path in ("/auth/revoke", "/auth/introspect"):
        r = await env.http.post(path, data={"token": '"', "token_type_hint": '"'})
        assert r.status_code < 500, (path, r.text[:300])
