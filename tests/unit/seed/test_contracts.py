"""``seed_data/logins.json`` and ``seed_data/clients.json`` follow the contracts in
DESIGN.md and point at resources that the population really contains."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from seed_data import load_clients, load_logins
from seed_data.accounts import logins_document
from seed_data.common import age_on
from seed_data.population import FIXTURE_TYPES, FIXTURES, build_population

TODAY = date(2026, 11, 22)
ROLES = {
    "sponsor", "spouse", "adult-dependent-no-grant", "adult-dependent-granted", "basic-user",
    "managed-account", "cac-user", "piv-user", "practitioner",
}  # fmt: skip
LOGIN_LEVELS = {"dslogon-basic", "dslogon-premium", "managed", "cac", "piv"}


@pytest.fixture(scope="module")
def logins() -> dict[str, Any]:
    return load_logins()


@pytest.fixture(scope="module")
def clients() -> list[dict[str, Any]]:
    return load_clients()["clients"]


@pytest.fixture(scope="module")
def index() -> dict[str, dict[str, Any]]:
    return {f"{r['resourceType']}/{r['id']}": r for r in build_population(TODAY)}


def by_role(logins: dict[str, Any], role: str) -> dict[str, Any]:
    return next(login for login in logins["logins"] if login["role"] == role)


def patient(fixture: str) -> str:
    return f"Patient/{FIXTURES[fixture]}"


# --- logins.json --------------------------------------------------------------------------


def test_logins_file_is_the_rendered_accounts(logins: dict[str, Any]) -> None:
    assert logins == logins_document()


def test_logins_follow_the_contract(logins: dict[str, Any], index: dict[str, Any]) -> None:
    assert {login["role"] for login in logins["logins"]} >= ROLES
    usernames = [login["username"] for login in logins["logins"]]
    assert len(usernames) == len(set(usernames))
    for login in logins["logins"]:
        assert {"role", "username", "password", "login", "fhirUser", "acts_for"} <= login.keys()
        assert login["login"] in LOGIN_LEVELS
        assert login["password"].startswith("Dev-Only-"), "passwords must look development-only"
        resource_type = login["fhirUser"].split("/")[0]
        assert resource_type in {"Patient", "Practitioner"}
        assert login["fhirUser"] in index, login["fhirUser"]
        for ref in login["acts_for"]:
            assert ref.startswith("Patient/") and ref in index, ref


def test_login_levels_match_roles(logins: dict[str, Any]) -> None:
    assert by_role(logins, "basic-user")["login"] == "dslogon-basic"
    assert by_role(logins, "managed-account")["login"] == "managed"
    assert by_role(logins, "cac-user")["login"] == "cac"
    assert by_role(logins, "piv-user")["login"] == "piv"
    assert by_role(logins, "practitioner")["fhirUser"].startswith("Practitioner/")


def test_who_acts_for_whom(logins: dict[str, Any], index: dict[str, Any]) -> None:
    sponsor = set(by_role(logins, "sponsor")["acts_for"])
    assert {patient("child-under-12"), patient("adolescent")} <= sponsor
    assert patient("adult-dependent-granted") in sponsor
    assert patient("adult-dependent-no-grant") not in sponsor
    spouse = set(by_role(logins, "spouse")["acts_for"])
    assert {patient("child-under-12"), patient("adolescent")} <= spouse
    assert by_role(logins, "managed-account")["acts_for"] == [patient("managed-beneficiary")]
    assert by_role(logins, "adult-dependent-no-grant")["acts_for"] == []
    # Every adult the sponsor acts for has granted it with an active Consent.
    for ref in sponsor:
        born = date.fromisoformat(index[ref]["birthDate"])
        if age_on(born, TODAY) >= 18:
            assert any(
                r["resourceType"] == "Consent"
                and r["status"] == "active"
                and r["patient"]["reference"] == ref
                for r in index.values()
            ), ref


def test_fixtures_match_the_population(logins: dict[str, Any], index: dict[str, Any]) -> None:
    fixtures = logins["fixtures"]
    assert {"child-under-12", "adolescent"} <= fixtures.keys()
    assert fixtures == FIXTURES
    assert logins["fixture_types"] == FIXTURE_TYPES
    for key, id_ in fixtures.items():
        assert f"{FIXTURE_TYPES[key]}/{id_}" in index, key
    for key in ("child-under-12", "adolescent"):
        assert FIXTURE_TYPES[key] == "Patient"
    child = date.fromisoformat(index[patient("child-under-12")]["birthDate"])
    teen = date.fromisoformat(index[patient("adolescent")]["birthDate"])
    assert age_on(child, TODAY) < 12 <= age_on(teen, TODAY) <= 17


# --- clients.json -------------------------------------------------------------------------


def test_clients_cover_the_three_roles(clients: list[dict[str, Any]]) -> None:
    assert {c["role"] for c in clients} >= {"public-app", "confidential-app", "backend-service"}
    ids = [c["client_id"] for c in clients]
    assert len(ids) == len(set(ids))
    for client in clients:
        assert isinstance(client["redirect_uris"], list)
        assert ("client_secret" in client) == (client["role"] == "confidential-app")


def test_public_app_uses_a_loopback_redirect(clients: list[dict[str, Any]]) -> None:
    public = next(c for c in clients if c["role"] == "public-app")
    assert public["redirect_uris"]
    assert all(uri.startswith("http://127.0.0.1") for uri in public["redirect_uris"])
    assert public["token_endpoint_auth_method"] == "none"


def test_backend_service_key_signs_client_assertions(clients: list[dict[str, Any]]) -> None:
    backend = next(c for c in clients if c["role"] == "backend-service")
    assert "system/*.rs" in backend["scope"].split()
    private = backend["jwk"]
    assert private["alg"] == "RS384" and private["kid"] and "d" in private
    key = RSAKey.import_key(private)
    assert key.thumbprint() == private["kid"]
    public = RSAKey.import_key(backend["jwks"]["keys"][0])
    assert "d" not in backend["jwks"]["keys"][0]
    claims = {"iss": backend["client_id"], "sub": backend["client_id"], "jti": "test"}
    # SMART Backend Services asks for RS384 or ES384; joserfc wants it allowed explicitly.
    header = {"alg": "RS384", "kid": private["kid"]}
    token = jwt.encode(header, claims, key, algorithms=["RS384"])
    assert jwt.decode(token, public, algorithms=["RS384"]).claims == claims
