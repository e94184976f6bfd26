"""Refresh rotation and replay (RFC 9700 section 4.14.2), revocation (RFC 7009), introspection
(RFC 7662)."""

from __future__ import annotations

from tests.integration.auth.conftest import CONFIDENTIAL, PUBLIC, authorize, exchange


async def refresh(env, token: str, client=PUBLIC, **extra):
    data = {"grant_type": "refresh_token", "refresh_token": token, **extra}
    kwargs = {}
    if client.get("client_secret"):
        kwargs["auth"] = (client["client_id"], client["client_secret"])
    else:
        data["client_id"] = client["client_id"]
    return await env.http.post("/auth/token", data=data, **kwargs)


async def fhir(env, token):
    return await env.http.get("/fhir/Patient", headers={"Authorization": f"Bearer {token}"})


async def tokens(
    env, scope="launch/patient patient/*.rs offline_access", role="spouse", client=PUBLIC
):
    auth = await authorize(env.http, role, scope, client=client)
    r = await exchange(env.http, auth, client=client)
    assert r.status_code == 200, r.text
    return r.json()


async def test_refresh_rotates_and_keeps_context(env):
    first = await tokens(env)
    r = await refresh(env, first["refresh_token"])
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["patient"] == first["patient"]
    assert second["scope"] == first["scope"]
    assert r.headers["cache-control"] == "no-store"
    assert (await fhir(env, second["access_token"])).status_code == 200


async def test_refresh_with_narrower_scope(env):
    first = await tokens(
        env, "launch/patient patient/Observation.rs patient/Patient.rs offline_access"
    )
    r = await refresh(env, first["refresh_token"], scope="patient/Patient.rs offline_access")
    assert r.status_code == 200 and r.json()["scope"] == "patient/Patient.rs offline_access"
    wider = await refresh(env, r.json()["refresh_token"], scope="patient/*.cruds")
    assert wider.status_code == 400 and wider.json()["error"] == "invalid_scope"


async def test_replayed_refresh_token_revokes_the_grant(env):
    first = await tokens(env)
    second = (await refresh(env, first["refresh_token"])).json()
    replay = await refresh(env, first["refresh_token"])
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    # The whole grant is gone: the newest refresh token and every access token.
    assert (await refresh(env, second["refresh_token"])).status_code == 400
    assert (await fhir(env, second["access_token"])).status_code == 401
    assert (await fhir(env, first["access_token"])).status_code == 401


async def test_refresh_token_is_bound_to_its_client(env):
    first = await tokens(env)
    r = await refresh(env, first["refresh_token"], client=CONFIDENTIAL)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    # The rightful client still can (another client's attempt is not a replay).
    assert (await refresh(env, first["refresh_token"])).status_code == 200


async def test_no_refresh_token_without_offline_or_online_access(env):
    body = await tokens(env, "launch/patient patient/*.rs")
    assert "refresh_token" not in body


async def test_online_access_gives_refresh_token(env):
    body = await tokens(env, "launch/patient patient/*.rs online_access")
    assert body["refresh_token"]


async def test_revoke_access_token(env):
    body = await tokens(env)
    assert (await fhir(env, body["access_token"])).status_code == 200
    r = await env.http.post(
        "/auth/revoke", data={"token": body["access_token"], "client_id": PUBLIC["client_id"]}
    )
    assert r.status_code == 200
    assert (await fhir(env, body["access_token"])).status_code == 401
    # The refresh token still works: only the one access token was revoked.
    assert (await refresh(env, body["refresh_token"])).status_code == 200


async def test_revoke_refresh_token_revokes_grant(env):
    body = await tokens(env, client=CONFIDENTIAL)
    r = await env.http.post(
        "/auth/revoke",
        data={"token": body["refresh_token"], "token_type_hint": "refresh_token"},
        auth=(CONFIDENTIAL["client_id"], CONFIDENTIAL["client_secret"]),
    )
    assert r.status_code == 200
    assert (await fhir(env, body["access_token"])).status_code == 401
    assert (await refresh(env, body["refresh_token"], client=CONFIDENTIAL)).status_code == 400


async def test_revoke_unknown_token_is_200(env):
    r = await env.http.post(
        "/auth/revoke", data={"token": "nothing", "client_id": PUBLIC["client_id"]}
    )
    assert r.status_code == 200


async def test_revoke_needs_client_authentication(env):
    body = await tokens(env, client=CONFIDENTIAL)
    r = await env.http.post("/auth/revoke", data={"token": body["access_token"]})
    assert r.status_code == 401
    assert (await fhir(env, body["access_token"])).status_code == 200


async def test_introspection(env):
    body = await tokens(env, client=CONFIDENTIAL)
    creds = (CONFIDENTIAL["client_id"], CONFIDENTIAL["client_secret"])
    r = await env.http.post("/auth/introspect", data={"token": body["access_token"]}, auth=creds)
    assert r.status_code == 200
    info = r.json()
    assert info["active"] is True
    assert info["patient"] == body["patient"]
    assert info["client_id"] == CONFIDENTIAL["client_id"]
    assert info["scope"] == body["scope"]
    # Another client may not learn about it.
    other = await env.http.post(
        "/auth/introspect", data={"token": body["access_token"], "client_id": PUBLIC["client_id"]}
    )
    assert other.json() == {"active": False}
    await env.http.post("/auth/revoke", data={"token": body["refresh_token"]}, auth=creds)
    after = await env.http.post(
        "/auth/introspect", data={"token": body["access_token"]}, auth=creds
    )
    assert after.json() == {"active": False}
    junk = await env.http.post("/auth/introspect", data={"token": "junk"}, auth=creds)
    assert junk.json() == {"active": False}


async def test_a_refresh_outside_the_grant_keeps_the_token(env):
    """The refresh token was once rotated (destroyed) before the scope was checked, so the
    refused request cost the client its grant."""
    first = await tokens(env, "launch/patient patient/Patient.rs offline_access")
    for scope in ("patient/*.cruds", "patient/Patient.rs user/*.rs", "openid"):
        wider = await refresh(env, first["refresh_token"], scope=scope)
        assert wider.status_code == 400 and wider.json()["error"] == "invalid_scope", scope
    again = await refresh(env, first["refresh_token"])
    assert again.status_code == 200, again.text  # still active, and no replay was seen
    assert (await fhir(env, again.json()["access_token"])).status_code == 200
