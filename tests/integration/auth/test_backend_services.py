"""SMART Backend Services: client_credentials with private_key_jwt (RS384, ES384)."""

from __future__ import annotations

import secrets
import time
import uuid

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, RSAKey

from smart_auth import allows, parse_scopes
from smart_auth.clients import register_client
from smart_auth.rfc7523 import ASSERTION_TYPE
from tests.integration.auth.conftest import BACKEND

TOKEN_URL = "http://127.0.0.1:8080/auth/token"


def assertion(key, client_id: str, alg: str, **overrides) -> str:
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": TOKEN_URL,
        "exp": now + 240,
        "jti": str(uuid.uuid4()),
    }
    claims.update(overrides)
    header = {"alg": alg, "typ": "JWT", "kid": key.kid}
    return jwt.encode(
        header, {k: v for k, v in claims.items() if v is not None}, key, algorithms=[alg]
    )


async def request_token(env, client_assertion: str, scope: str = "system/*.rs"):
    return await env.http.post(
        "/auth/token",
        data={
            "grant_type": "client_credentials",
            "scope": scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": client_assertion,
        },
    )


@pytest.fixture(scope="module")
def backend_key():
    return RSAKey.import_key(BACKEND["jwk"])


async def test_rs384_backend_service_gets_system_token(env, backend_key):
    r = await request_token(env, assertion(backend_key, BACKEND["client_id"], "RS384"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["scope"] == "system/*.rs"
    assert "refresh_token" not in body and "patient" not in body
    assert r.headers["cache-control"] == "no-store"
    me = await env.http.get(
        "/fhir/Patient", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert me.status_code == 200
    assert me.json()["fhirUser"] is None and me.json()["acr"] is None
    assert allows(parse_scopes(body["scope"]), "Observation", "search")


async def test_jti_replay_is_refused(env, backend_key):
    signed = assertion(backend_key, BACKEND["client_id"], "RS384")
    assert (await request_token(env, signed)).status_code == 200
    again = await request_token(env, signed)
    assert again.status_code == 401 and again.json()["error"] == "invalid_client"


@pytest.mark.parametrize(
    "overrides",
    [
        {"exp": int(time.time()) + 3600},  # more than five minutes ahead
        {"exp": int(time.time()) - 600},  # expired
        {"exp": None},
        {"jti": None},
        {"aud": "http://127.0.0.1:8080/fhir"},
        {"sub": "someone-else"},
    ],
)
async def test_bad_assertion_claims_are_401(env, backend_key, overrides):
    r = await request_token(env, assertion(backend_key, BACKEND["client_id"], "RS384", **overrides))
    assert r.status_code == 401, overrides
    assert r.json()["error"] == "invalid_client"


async def test_assertion_signed_by_another_key_is_401(env):
    other = RSAKey.generate_key(2048, parameters={"kid": BACKEND["jwk"]["kid"]})
    r = await request_token(env, assertion(other, BACKEND["client_id"], "RS384"))
    assert r.status_code == 401


async def test_hs256_assertion_is_401(env):
    key = OctKey.generate_key(256, parameters={"kid": BACKEND["jwk"]["kid"]})
    r = await request_token(env, assertion(key, BACKEND["client_id"], "HS256"))
    assert r.status_code == 401


async def test_only_system_scopes_and_only_registered_ones(env, backend_key):
    r = await request_token(
        env, assertion(backend_key, BACKEND["client_id"], "RS384"), "patient/*.rs"
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"
    r = await request_token(
        env, assertion(backend_key, BACKEND["client_id"], "RS384"), "system/*.cruds"
    )
    assert r.status_code == 200 and r.json()["scope"] == "system/*.rs"


async def test_backend_cannot_use_authorization_code_or_secrets(env):
    r = await env.http.post(
        "/auth/token",
        data={"grant_type": "client_credentials", "scope": "system/*.rs"},
        auth=(BACKEND["client_id"], "guess"),
    )
    assert r.status_code == 401


async def test_es384_client_with_inline_jwks(env):
    key = ECKey.generate_key("P-384", parameters={"alg": "ES384"}, auto_kid=True)
    client_id = f"es384-{secrets.token_hex(4)}"
    entry = {
        "client_id": client_id,
        "token_endpoint_auth_method": "private_key_jwt",
        "grant_types": ["client_credentials"],
        "scope": "system/Observation.rs",
        "jwks": {"keys": [key.as_dict(private=False)]},
    }
    await env.run(register_client, env.server.store, entry)
    r = await request_token(env, assertion(key, client_id, "ES384"), "system/Observation.rs")
    assert r.status_code == 200, r.text
    # An ES256 signature is not one of the algorithms SMART asks for.
    key256 = ECKey.generate_key("P-256", auto_kid=True)
    await env.run(
        register_client,
        env.server.store,
        {**entry, "jwks": {"keys": [key256.as_dict(private=False)]}},
    )
    bad = await request_token(env, assertion(key256, client_id, "ES256"), "system/Observation.rs")
    assert bad.status_code == 401


async def test_jwks_by_url(env):
    key = RSAKey.generate_key(2048, parameters={"alg": "RS384"}, auto_kid=True)
    client_id = f"jwks-url-{secrets.token_hex(4)}"
    url = f"https://partner.example/{client_id}/jwks.json"
    fetched: list[str] = []
    plugin = env.server.oauth._client_auth._methods["private_key_jwt"]
    previous = plugin.fetcher

    def fetch(u: str) -> dict:
        fetched.append(u)
        return {"keys": [key.as_dict(private=False)]}

    plugin.fetcher = fetch
    try:
        entry = {
            "client_id": client_id,
            "token_endpoint_auth_method": "private_key_jwt",
            "grant_types": ["client_credentials"],
            "scope": "system/*.rs",
            "jwks_uri": url,
        }
        await env.run(register_client, env.server.store, entry)
        r = await request_token(env, assertion(key, client_id, "RS384"))
        assert r.status_code == 200, r.text
        assert fetched == [url]
    finally:
        plugin.fetcher = previous
