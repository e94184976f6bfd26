"""`fhir-server token`: an access token from the running server's own authorization
server, in one command (development only).

It plays the browser in the SMART authorization code flow with PKCE, over HTTP against the
running server: `/auth/authorize` -> the login page's form -> the consent page's form
(everything offered approved, the patient chosen by `--patient`) -> the code from the
redirect (nothing listens there; the redirect is only read) -> `/auth/token`. So the
token is signed, scoped, audited and revocable exactly as a browser app's is: there is no
side door. The password is the seed login's from seed_data/logins.json. Production refuses
(docs/rest.md, "A token in one command").
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx

from fhir_server.config import Settings
from smart_auth.config import SEED_DIR

REDIRECT_URI = "http://127.0.0.1:53682/callback"


class TokenError(Exception):
    """Why no token: said to the user as it is."""


class _Forms(HTMLParser):
    """The forms of a page as a browser submits them: hidden and text values, checked
    boxes and radios, the first option of a select, the buttons."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"action": a.get("action", ""), "fields": []})
        elif self.forms and tag in ("input", "button", "select", "option"):
            fields = self.forms[-1]["fields"]
            if tag == "option":
                if (
                    fields
                    and fields[-1]["type"] == "select"
                    and (not fields[-1]["options"] or "selected" in a)
                ):
                    fields[-1]["options"].append(a.get("value", ""))
                return
            kind = (
                "select"
                if tag == "select"
                else a.get("type", "submit" if tag == "button" else "text")
            )
            fields.append(
                {
                    "type": kind,
                    "name": a.get("name", ""),
                    "value": a.get("value", ""),
                    "checked": "checked" in a,
                    "options": [],
                }
            )


def _only_form(html: str, what: str) -> dict[str, Any]:
    parser = _Forms()
    parser.feed(html)
    if len(parser.forms) != 1:
        raise TokenError(f"the {what} page did not have one form")
    return parser.forms[0]


def _pairs(
    form: dict[str, Any], values: dict[str, str], button: str | None
) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for f in form["fields"]:
        name = f["name"]
        if not name:
            continue
        if f["type"] in ("checkbox", "radio"):
            if f["checked"]:
                out.append((name, f["value"]))
        elif f["type"] == "submit":
            if name == button:
                out.append((name, f["value"]))
        elif f["type"] == "select":
            out.append((name, values.get(name, f["options"][-1] if f["options"] else "")))
        else:
            out.append((name, values.get(name, f["value"])))
    return out


def _post_form(http: httpx.Client, url: str, pairs: list[tuple[str, str]]) -> httpx.Response:
    return http.post(
        url,
        content=urlencode(pairs),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )


def seed_password(username: str) -> str:
    logins = json.loads((SEED_DIR / "logins.json").read_text(encoding="utf-8"))["logins"]
    for login in logins:
        if login["username"] == username:
            return str(login["password"])
    known = ", ".join(x["username"] for x in logins)
    raise TokenError(f"{username!r} is not a development login (seed_data/logins.json: {known})")


def _public_client() -> str:
    clients = json.loads((SEED_DIR / "clients.json").read_text(encoding="utf-8"))["clients"]
    return next(c["client_id"] for c in clients if c["role"] == "public-app")


def _choose_patient(form: dict[str, Any], patient: str | None) -> dict[str, str]:
    """The consent form's `patient` field set to `patient` (an id or Patient/id)."""
    fields = [f for f in form["fields"] if f["name"] == "patient"]
    if patient is None or not fields:
        if patient is not None:
            raise TokenError("the consent page offered no choice of patient for this login")
        return {}
    ref = patient if patient.startswith("Patient/") else f"Patient/{patient}"
    radios = [f for f in fields if f["type"] == "radio"]
    if radios:
        if not any(f["value"] == ref for f in radios):
            offered = ", ".join(f["value"] for f in radios)
            raise TokenError(f"{ref} is not among the patients this login may open: {offered}")
        for f in radios:
            f["checked"] = f["value"] == ref
        return {}
    return {"patient": ref.removeprefix("Patient/")}


def issue(
    settings: Settings,
    username: str,
    scope: str,
    *,
    patient: str | None = None,
    password: str | None = None,
    server: str | None = None,
    transport: httpx.BaseTransport | None = None,
) -> dict[str, Any]:
    """The token response (access_token, scope, patient, ...) from the running server."""
    if settings.production:
        raise TokenError(
            "fhir-server token is for development only: it signs in with the seed logins, "
            "and FHIR_ENV=production refuses it. Use a registered SMART app."
        )
    base = (server or settings.base_url).rstrip("/")
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(base))
    secret = password if password is not None else seed_password(username)
    verifier = secrets.token_urlsafe(48)
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )
    client_id = _public_client()
    state = secrets.token_urlsafe(8)
    words = scope.split()
    if patient is not None and "launch/patient" not in words:
        words.append("launch/patient")
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT_URI,
        "scope": " ".join(words),
        "state": state,
        "aud": base,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    try:
        with httpx.Client(base_url=origin, timeout=30, transport=transport) as http:
            page = http.get("/auth/authorize", params=params)
            if page.status_code != 200:
                raise TokenError(
                    f"the authorization server refused the request: {page.status_code}"
                )
            login = _only_form(page.text, "login")
            text = next(f["name"] for f in login["fields"] if f["type"] == "text")
            pwd = next(f["name"] for f in login["fields"] if f["type"] == "password")
            consent = _post_form(
                http,
                urljoin(origin, login["action"]),
                _pairs(login, {text: username, pwd: secret}, None),
            )
            if consent.status_code != 200:  # the login page again, with its error
                raise TokenError("sign-in failed (wrong username or password, or a locked account)")
            form = _only_form(consent.text, "consent")
            values = _choose_patient(form, patient)
            done = _post_form(
                http, urljoin(origin, form["action"]), _pairs(form, values, "approve")
            )
            location = done.headers.get("location", "")
            if done.status_code != 302 or not location.startswith(REDIRECT_URI):
                raise TokenError(f"consent was not accepted ({done.status_code})")
            query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
            if query.get("state") != state or "code" not in query:
                raise TokenError(query.get("error_description", "no authorization code came back"))
            token = http.post(
                "/auth/token",
                data={
                    "grant_type": "authorization_code",
                    "code": query["code"],
                    "redirect_uri": REDIRECT_URI,
                    "code_verifier": verifier,
                    "client_id": client_id,
                },
            )
            if token.status_code != 200:
                raise TokenError(f"the token endpoint answered {token.status_code}: {token.text}")
            return dict(token.json())
    except httpx.ConnectError:
        raise TokenError(
            f"no server answers at {origin}: start it first (make serve, or fhir-server serve)"
        ) from None
