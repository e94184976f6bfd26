"""SMART 2.2 discovery, OpenID discovery, JWKS and the CapabilityStatement security element."""

from __future__ import annotations

import smart_auth
from smart_auth.discovery import CAPABILITIES
from tests.conftest import make_settings

REQUIRED = [
    "issuer",
    "jwks_uri",
    "authorization_endpoint",
    "token_endpoint",
    "grant_types_supported",
    "capabilities",
    "code_challenge_methods_supported",
]
RECOMMENDED = [
    "scopes_supported",
    "response_types_supported",
    "management_endpoint",
    "introspection_endpoint",
    "revocation_endpoint",
    "user_access_brand_bundle",
    "user_access_brand_identifier",
    "token_endpoint_auth_methods_supported",
]
URL_FIELDS = [
    "issuer",
    "jwks_uri",
    "authorization_endpoint",
    "token_endpoint",
    "management_endpoint",
    "introspection_endpoint",
    "revocation_endpoint",
    "user_access_brand_bundle",
]


async def test_smart_configuration(env):
    r = await env.http.get("/fhir/.well-known/smart-configuration")
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "*"
    conf = r.json()
    for key in REQUIRED + RECOMMENDED:
        assert key in conf, key
    for key in URL_FIELDS:
        assert conf[key].startswith("http://127.0.0.1:8080"), key
    assert conf["code_challenge_methods_supported"] == ["S256"]
    assert set(conf["capabilities"]) == set(CAPABILITIES)
    assert len(CAPABILITIES) == 17
    assert {"authorization_code", "client_credentials", "refresh_token"} <= set(
        conf["grant_types_supported"]
    )
    assert "private_key_jwt" in conf["token_endpoint_auth_methods_supported"]


async def test_openid_configuration_matches(env):
    smart = (await env.http.get("/fhir/.well-known/smart-configuration")).json()
    oidc = (await env.http.get("/.well-known/openid-configuration")).json()
    assert oidc["issuer"] == smart["issuer"]
    assert oidc["jwks_uri"] == smart["jwks_uri"]
    assert oidc["id_token_signing_alg_values_supported"] == ["RS256"]
    assert "fhirUser" in oidc["claims_supported"]


async def test_jwks_has_public_keys_only(env):
    jwks = (await env.http.get("/auth/jwks")).json()
    assert jwks["keys"]
    for key in jwks["keys"]:
        assert key["kid"] and key["alg"] == "RS256"
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)


async def test_key_rotation_keeps_old_tokens_valid(env):
    from tests.integration.auth.conftest import authorize, exchange

    auth = await authorize(env.http, "spouse", "patient/*.rs")
    old = (await exchange(env.http, auth)).json()["access_token"]
    before = {k["kid"] for k in (await env.http.get("/auth/jwks")).json()["keys"]}
    new_kid = await env.run(env.server.keys.rotate)
    after = {k["kid"] for k in (await env.http.get("/auth/jwks")).json()["keys"]}
    assert new_kid not in before and before | {new_kid} == after
    r = await env.http.get("/fhir/Patient", headers={"Authorization": f"Bearer {old}"})
    assert r.status_code == 200
    auth = await authorize(env.http, "spouse", "patient/*.rs")
    fresh = (await exchange(env.http, auth)).json()["access_token"]
    import base64
    import json

    header = json.loads(base64.urlsafe_b64decode(fresh.split(".")[0] + "=="))
    assert header["kid"] == new_kid


async def test_brand_bundle(env):
    bundle = (await env.http.get("/auth/brands")).json()
    assert bundle["resourceType"] == "Bundle"
    assert {e["resource"]["resourceType"] for e in bundle["entry"]} == {"Organization", "Endpoint"}


def test_security_element(mongo_uri):
    element = smart_auth.security_element(make_settings(mongo_uri))
    assert element["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    uris = {e["url"]: e["valueUri"] for e in element["extension"][0]["extension"]}
    assert uris["token"] == "http://127.0.0.1:8080/auth/token"
    assert uris["authorize"] == "http://127.0.0.1:8080/auth/authorize"
    assert {"manage", "introspect", "revoke"} <= set(uris)
