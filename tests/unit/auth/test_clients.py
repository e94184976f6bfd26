"""smart_auth/clients.py: RFC 8252 loopback matching, scope narrowing, registration."""

from __future__ import annotations

import json

import pytest

from smart_auth.clients import (
    SmartClient,
    allowed_scope,
    client_doc,
    loopback_match,
    origin_allowed,
)
from smart_auth.config import SEED_DIR

REG = "http://127.0.0.1/callback"


@pytest.mark.parametrize(
    ("requested", "ok"),
    [
        ("http://127.0.0.1:53682/callback", True),
        ("http://127.0.0.1/callback", True),
        ("http://127.0.0.1:1/callback", True),
        ("http://127.0.0.1:0/callback", False),
        ("http://127.0.0.1:00/callback", False),
        ("http://127.0.0.1:53682/callback/extra", False),
        ("http://127.0.0.1:53682/other", False),
        ("http://127.0.0.1:53682/callback?x=1", False),
        ("http://localhost:53682/callback", False),
        ("https://127.0.0.1:53682/callback", False),
        ("http://127.0.0.2:53682/callback", False),
        ("http://user@127.0.0.1:53682/callback", False),
        ("http://127.0.0.1:99999/callback", False),
        ("http://127.0.0.1.evil.example/callback", False),
        ("http://127.0.0.1:53682/callback#frag", False),
    ],
)
def test_loopback(requested, ok):
    assert loopback_match(REG, requested) is ok


def test_non_loopback_registration_is_exact():
    client = SmartClient("c", "c", "none", redirect_uris=["https://app.example/cb"])
    assert client.check_redirect_uri("https://app.example/cb")
    assert not client.check_redirect_uri("https://app.example/cb2")
    assert not client.check_redirect_uri("https://app.example:444/cb")


def test_allowed_scope():
    registered = "openid launch/patient offline_access patient/*.rs"
    got = allowed_scope(
        "openid profile launch/patient patient/Observation.read patient/*.cruds bogus", registered
    )
    assert got == "openid launch/patient patient/Observation.read patient/*.rs"
    assert allowed_scope(None, registered) == ""


def test_seed_clients_become_docs_with_hashed_secrets():
    entries = json.loads((SEED_DIR / "clients.json").read_text())["clients"]
    docs = {e["role"]: client_doc(e) for e in entries}
    confidential = docs["confidential-app"]
    assert confidential["secret_hash"].startswith("$argon2")
    assert "client_secret" not in confidential
    backend = docs["backend-service"]
    assert backend["jwks"]["keys"][0]["kid"]
    assert "d" not in backend["jwks"]["keys"][0]
    client = SmartClient.from_doc(confidential)
    secret = next(e for e in entries if e["role"] == "confidential-app")["client_secret"]
    assert client.check_client_secret(secret)
    assert not client.check_client_secret(secret + "x")
    assert client.check_endpoint_auth_method("client_secret_basic", "token")
    assert not client.check_endpoint_auth_method("none", "token")


@pytest.mark.parametrize(
    ("origin", "ok"),
    [
        ("http://127.0.0.1:5173", True),  # a loopback redirect URI: any port
        ("http://127.0.0.1", True),
        ("https://app.example.org", True),  # an https redirect URI: its own origin
        ("https://app.example.org:443", False),  # browsers never send the default port
        ("https://app.example.org:8443", False),
        ("http://app.example.org", False),
        ("http://localhost:5173", False),
        ("http://127.0.0.1:5173/callback", False),  # not an origin
        ("null", False),
        ("", False),
    ],
)
def test_cors_origins_follow_the_redirect_uris(origin: str, ok: bool) -> None:
    uris = [REG, "https://app.example.org/cb"]
    assert origin_allowed(origin, uris) is ok
