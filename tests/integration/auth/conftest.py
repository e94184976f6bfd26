"""A minimal app with only the authorization server and one protected route, on the real
session database (tests/conftest.py `mongo_uri`)."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import anyio
import httpx
import pytest
from fastapi import FastAPI, Request
from starlette.responses import JSONResponse, Response

import smart_auth
from fhir_server.errors import FhirError
from fhir_server.rest.render import render_error
from smart_auth import AuthConfig, AuthServer
from tests.conftest import make_settings
from tests.integration.auth.forms import only_form

ROOT = Path(__file__).resolve().parents[3]
CLIENTS = {
    c["role"]: c for c in json.loads((ROOT / "seed_data/clients.json").read_text())["clients"]
}
LOGINS = json.loads((ROOT / "seed_data/logins.json").read_text())["logins"]
BASE = "http://127.0.0.1:8080"
FHIR = BASE + "/fhir"
PUBLIC = CLIENTS["public-app"]
CONFIDENTIAL = CLIENTS["confidential-app"]
BACKEND = CLIENTS["backend-service"]


def login_for(role: str) -> dict[str, Any]:
    """The first seed login with this role, or the login with this username."""
    return next(x for x in LOGINS if role in (x["role"], x["username"]))


def build_app(settings: Any, **overrides: Any) -> FastAPI:
    app = FastAPI()
    smart_auth.install(app, settings, AuthConfig.from_settings(settings, **overrides))

    @app.exception_handler(FhirError)
    async def fhir_error(request: Request, exc: FhirError) -> Response:
        return render_error(exc, False)

    @app.get("/fhir/Patient")
    async def protected(request: Request) -> JSONResponse:
        token = smart_auth.bearer_token(request.headers.get("authorization"))
        ctx = await smart_auth.verify_access_token(request.app, token)
        return JSONResponse(
            {
                "subject": ctx.subject,
                "fhirUser": ctx.fhir_user,
                "patient": ctx.patient,
                "acr": ctx.acr,
                "client_id": ctx.client_id,
                "scope": ctx.scope,
                "acts_for": list(ctx.acts_for),
            }
        )

    return app


@dataclass
class Env:
    http: httpx.AsyncClient
    server: AuthServer
    app: FastAPI

    def fresh(self) -> httpx.AsyncClient:
        """Another browser: its own cookie jar."""
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url=BASE)

    async def run(self, fn: Any, *args: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, *args)


@pytest.fixture(scope="module")
async def env(mongo_uri: str) -> AsyncIterator[Env]:
    settings = make_settings(mongo_uri)
    app = build_app(settings)
    async with app.router.lifespan_context(app):
        server: AuthServer = app.state.smart_auth
        await anyio.to_thread.run_sync(server.seed_development)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
            yield Env(http, server, app)
        await anyio.to_thread.run_sync(lambda: server.store.client.drop_database(settings.database))


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def query(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


@dataclass
class Authorized:
    code: str
    verifier: str
    redirect_uri: str
    state: str


def authorize_params(
    client: dict[str, Any],
    scope: str,
    challenge: str,
    *,
    redirect_uri: str = "http://127.0.0.1:53682/callback",
    **extra: str,
) -> dict[str, str]:
    params = {
        "response_type": "code",
        "client_id": client["client_id"],
        "redirect_uri": redirect_uri,
        "scope": scope,
        "state": secrets.token_urlsafe(8),
        "aud": FHIR,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    params.update(extra)
    return params


async def login_page(http: httpx.AsyncClient, params: dict[str, str]) -> httpx.Response:
    r = await http.get("/auth/authorize", params=params)
    assert r.status_code == 200, r.text
    return r


async def submit_login(
    http: httpx.AsyncClient, page: str, username: str, password: str, **extra: str
) -> httpx.Response:
    form = only_form(page)
    text = form.by_type("text")[0]
    pwd = form.by_type("password")[0]
    pairs = form.submit({text.name: username, pwd.name: password, **extra})
    return await post_form(http, form.action, pairs)


async def post_form(
    http: httpx.AsyncClient, url: str, pairs: list[tuple[str, str]]
) -> httpx.Response:
    return await http.post(
        url, content=urlencode(pairs), headers={"Content-Type": "application/x-www-form-urlencoded"}
    )


async def approve(
    http: httpx.AsyncClient, page: str, *, untick: tuple[str, ...] = (), patient: str | None = None
) -> httpx.Response:
    form = only_form(page)
    for f in form.fields:
        if f.type == "checkbox" and f.value in untick:
            f.checked = False
        if f.type == "radio" and patient is not None:
            f.checked = f.value == patient
    approve_button = next(f for f in form.fields if f.type == "submit" and f.name == "approve")
    return await post_form(http, form.action, form.submit(button=approve_button.name))


async def authorize(
    http: httpx.AsyncClient,
    role: str,
    scope: str,
    client: dict[str, Any] = PUBLIC,
    *,
    untick: tuple[str, ...] = (),
    patient: str | None = None,
    **extra: str,
) -> Authorized:
    verifier, challenge = pkce()
    params = authorize_params(client, scope, challenge, **extra)
    page = await login_page(http, params)
    who = login_for(role)
    consent = await submit_login(http, page.text, who["username"], who["password"])
    assert consent.status_code == 200, consent.text
    done = await approve(http, consent.text, untick=untick, patient=patient)
    assert done.status_code == 302, done.text
    q = query(done.headers["location"])
    assert q["state"] == params["state"]
    return Authorized(q["code"], verifier, params["redirect_uri"], params["state"])


async def exchange(
    http: httpx.AsyncClient, auth: Authorized, client: dict[str, Any] = PUBLIC, **extra: str
) -> httpx.Response:
    data = {
        "grant_type": "authorization_code",
        "code": auth.code,
        "redirect_uri": auth.redirect_uri,
        "code_verifier": auth.verifier,
    }
    kwargs: dict[str, Any] = {}
    if client.get("client_secret"):
        kwargs["auth"] = (client["client_id"], client["client_secret"])
    else:
        data["client_id"] = client["client_id"]
    data.update(extra)
    return await http.post(
        "/auth/token", data={k: v for k, v in data.items() if v is not None}, **kwargs
    )
