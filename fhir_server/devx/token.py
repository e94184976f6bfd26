"""`fhir-server token`: an access token from the real authorization server, in one command.

Development only. It walks the authorization code flow in-process, step for step as a
browser does (smart_auth/flow.py): authorize (client, redirect URI, PKCE, ``aud``) -> login
(the account's password check, lockout and login audit) -> consent (the login level caps the
scopes, the patient must be one the login may open) -> the token endpoint (code + PKCE
verifier). So the token carries the same signing, grant record, audit and scope ceiling as
one from the browser; there is no shortcut with rules of its own.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from smart_auth import flow
from smart_auth.oauth import SmartRequest
from smart_auth.server import AuthServer

# The development public client (seed_data/clients.json) and its loopback redirect: the
# code is read from the redirect's Location, nothing listens there.
CLIENT_ID = "mhs-portal-public-app"
REDIRECT_URI = "http://127.0.0.1/callback"


class TokenRefused(Exception):
    """The flow refused (bad login, scope, patient...): the message says why, in plain words."""


@dataclass(frozen=True)
class Issued:
    response: dict[str, Any]  # the token endpoint's JSON answer
    withheld: list[str]  # requested scopes the login level does not allow


def seed_password(username: str, logins_file: Path) -> str | None:
    """The password of a development seed login (public test data), or None."""
    doc = json.loads(logins_file.read_text(encoding="utf-8"))
    for entry in doc.get("logins", []):
        if entry.get("username") == username:
            return str(entry["password"])
    return None


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def issue(
    server: AuthServer, username: str, password: str, scope: str, patient: str | None = None
) -> Issued:
    """Run the authorization code flow for `username`; synchronous (the server's calls are)."""
    if server.config.production:
        raise TokenRefused("fhir-server token is for development only; refused in production")
    cfg = server.config
    verifier, challenge = _pkce()
    state = secrets.token_urlsafe(16)
    words = scope.split()
    if patient and "launch/patient" not in words:
        words.append("launch/patient")  # ask for a patient context, as an app would
    query = [
        ("response_type", "code"),
        ("client_id", CLIENT_ID),
        ("redirect_uri", REDIRECT_URI),
        ("scope", " ".join(words)),
        ("state", state),
        ("aud", cfg.base_url),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ]
    started = flow.start(server, SmartRequest("GET", cfg.url("/auth/authorize"), {}, query), None)
    if started.kind != "login" or started.view is None or started.new_cookie is None:
        raise TokenRefused(started.message or "the authorization request was refused")
    tx, cookie = started.view.tx, started.new_cookie
    context = {"ip": None, "user_agent": "fhir-server token"}
    offered = flow.login(server, tx, cookie, username, password, "auto", context)
    if offered.kind != "consent" or not isinstance(offered.view, flow.ConsentView):
        view = offered.view
        reason = getattr(view, "error", None) or offered.message
        raise TokenRefused(reason or "the login was refused")
    view = offered.view
    chosen = list(view.resource_scopes) + ([view.refresh] if view.refresh else [])
    choice = None
    if patient:
        choice = f"Patient/{patient.removeprefix('Patient/')}"
        if not view.patient_free_text and choice not in view.patients:
            allowed = ", ".join(p.removeprefix("Patient/") for p in view.patients) or "none"
            raise TokenRefused(f"{username} may not open patient {patient}; choices: {allowed}")
    done = flow.consent(server, tx, cookie, deny=False, chosen_scopes=chosen, patient=choice)
    if done.kind != "redirect" or not done.location:
        raise TokenRefused(done.message or "the consent step was refused")
    answer = parse_qs(urlsplit(done.location).query)
    if "code" not in answer:
        error = answer.get("error_description") or answer.get("error") or ["no code"]
        raise TokenRefused(error[0])
    form = [
        ("grant_type", "authorization_code"),
        ("code", answer["code"][0]),
        ("redirect_uri", REDIRECT_URI),
        ("client_id", CLIENT_ID),
        ("code_verifier", verifier),
    ]
    token_request = SmartRequest("POST", cfg.url("/auth/token"), {}, form=form)
    response = server.oauth.create_token_response(token_request)
    body = response.body if isinstance(response.body, dict) else {}
    if response.status != 200 or "access_token" not in body:
        raise TokenRefused(str(body.get("error_description") or body.get("error") or body))
    return Issued(body, list(view.withheld))
