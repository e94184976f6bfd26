"""FastAPI routes: read HTTP, call the server in a worker thread, render. Nothing else.

Paths (absolute URLs in discovery): ``/fhir/.well-known/smart-configuration``,
``/.well-known/openid-configuration``, ``/auth/authorize`` (GET and POST, SMART
"authorize-post"), ``/auth/login``, ``/auth/verify`` (account linking), ``/auth/consent``, ``/auth/token``, ``/auth/revoke``,
``/auth/introspect``, ``/auth/jwks``, ``/auth/manage``, ``/auth/brands``,
``/auth/ehr-launch`` (development only).
"""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import anyio
from fastapi import APIRouter, FastAPI, Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from smart_auth import accounts, flow, linking, manage, pages
from smart_auth.cards import certificate_subject
from smart_auth.clients import LOOPBACK_HOSTS
from smart_auth.discovery import SCOPES_SUPPORTED, brand_bundle, smart_configuration
from smart_auth.oauth import OAuthResponse, SmartRequest
from smart_auth.oidc import openid_configuration
from smart_auth.server import AuthServer

FORM = "application/x-www-form-urlencoded"
MAX_FORM_BYTES = 64 * 1024
HTML_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # No form-action: browsers apply it to the redirect back to the app after consent.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"
    ),
}
# Public documents (discovery, keys, brands) are readable from any origin; the token,
# introspection and revocation endpoints get theirs from fhir_server.rest.cors, which allows
# only the registered clients' origins (docs/rest.md, "CORS").
CORS = {"Access-Control-Allow-Origin": "*"}


async def ensure_started(server: AuthServer, app: FastAPI) -> None:
    """Open the server's database on first use: ``settings.mongodb_uri``, else the URI the
    app's lifespan published as ``app.state.mongo_uri`` (the embedded database)."""
    if server.started:
        return
    uri = server.settings.mongodb_uri or getattr(app.state, "mongo_uri", "")
    if not uri:
        raise RuntimeError("no MongoDB URI: set settings.mongodb_uri or app.state.mongo_uri")
    await anyio.to_thread.run_sync(server.start, uri)


async def read_form(request: Request) -> list[tuple[str, str]] | None:
    """``application/x-www-form-urlencoded`` pairs (RFC 6749 section 3.2), else None."""
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype != FORM:
        return None
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return None
    try:
        return parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        return None


def html(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers=HTML_HEADERS)


def render_oauth(resp: OAuthResponse, extra: dict[str, str] | None = None) -> Response:
    headers = {k: v for k, v in resp.headers if k.lower() != "content-type"}
    headers.update(extra or {})
    if resp.status in (301, 302, 303, 307) and resp.location:
        return RedirectResponse(resp.location, status_code=302, headers=headers)
    body = resp.body if isinstance(resp.body, dict) else {}
    return JSONResponse(body, status_code=resp.status, headers=headers)


def oauth_error(error: str, description: str, status: int = 400) -> JSONResponse:
    return JSONResponse(
        {"error": error, "error_description": description},
        status_code=status,
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )


def render_flow(server: AuthServer, result: flow.FlowResult) -> Response:
    response: Response
    if result.kind == "redirect" and result.location:
        response = RedirectResponse(
            result.location, status_code=302, headers={"Cache-Control": "no-store"}
        )
    elif result.kind == "login" and isinstance(result.view, flow.LoginView):
        response = html(pages.login_page(result.view), result.status)
    elif result.kind == "verify" and isinstance(result.view, linking.VerifyView):
        response = html(pages.verify_page(result.view), result.status)
    elif result.kind == "consent" and isinstance(result.view, flow.ConsentView):
        response = html(pages.consent_page(result.view), result.status)
    else:
        response = html(pages.error_page(result.message), result.status or 400)
    if result.new_cookie:
        response.set_cookie(
            server.config.cookie_name,
            result.new_cookie,
            max_age=server.config.login_request_lifetime_s,
            path="/auth",
            secure=server.config.secure_cookies,
            httponly=True,
            samesite="lax",
        )
    return response


def client_context(request: Request) -> dict[str, Any]:
    return {
        "ip": request.client.host if request.client else None,
        "user_agent": request.headers.get("user-agent", "")[:256],
    }


def build_router(server: AuthServer) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    cfg = server.config

    def oauth_request(request: Request, path: str, form: list[tuple[str, str]]) -> SmartRequest:
        return SmartRequest(
            request.method,
            cfg.url(path),
            request.headers,
            query=list(request.query_params.multi_items()),
            form=form,
        )

    @router.get("/fhir/.well-known/smart-configuration")
    async def smart_config() -> JSONResponse:
        return JSONResponse(smart_configuration(cfg), headers=CORS)

    @router.get("/.well-known/openid-configuration")
    @router.get("/fhir/.well-known/openid-configuration")
    async def openid_config() -> JSONResponse:
        levels = list(server.policy.levels)
        return JSONResponse(openid_configuration(cfg, levels, SCOPES_SUPPORTED), headers=CORS)

    @router.get("/auth/jwks")
    async def jwks(request: Request) -> JSONResponse:
        await ensure_started(server, request.app)
        return JSONResponse(
            server.keys.public_jwks(), headers={**CORS, "Cache-Control": "max-age=300"}
        )

    @router.get("/auth/brands")
    async def brands() -> JSONResponse:
        return JSONResponse(brand_bundle(cfg), headers=CORS)

    @router.get("/auth/smart-style.json")
    async def smart_style() -> JSONResponse:
        return JSONResponse(
            {
                "color_background": "#f8f8f8",
                "color_error": "#b50909",
                "color_highlight": "#0b4f8a",
                "color_modal_backdrop": "",
                "color_success": "#1e7b34",
                "color_text": "#1b1b1b",
                "dim_border_radius": "4px",
                "dim_font_size": "16px",
                "dim_spacing_size": "16px",
                "font_family_body": "system-ui, sans-serif",
                "font_family_heading": "system-ui, sans-serif",
            },
            headers=CORS,
        )

    @router.api_route("/auth/authorize", methods=["GET", "POST"])
    async def authorize(request: Request) -> Response:
        await ensure_started(server, request.app)
        form: list[tuple[str, str]] = []
        if request.method == "POST":
            parsed = await read_form(request)
            if parsed is None:
                return html(pages.error_page("The authorization request must be a form post."), 400)
            form = parsed
        req = oauth_request(request, "/auth/authorize", form)
        cookie = request.cookies.get(cfg.cookie_name)
        result = await anyio.to_thread.run_sync(flow.start, server, req, cookie)
        return render_flow(server, result)

    @router.post("/auth/login")
    async def login(request: Request) -> Response:
        await ensure_started(server, request.app)
        form = dict(await read_form(request) or [])
        result = await anyio.to_thread.run_sync(
            lambda: flow.login(
                server,
                form.get("tx", ""),
                request.cookies.get(cfg.cookie_name),
                form.get("username", ""),
                form.get("password", ""),
                form.get("method", "auto"),
                client_context(request),
            )
        )
        return render_flow(server, result)

    @router.post("/auth/verify")
    async def verify(request: Request) -> Response:
        """Identity verification of an unlinked account (linking.py): the lockout slot and
        the link in worker threads, the match by the FHIR server's verifier in between."""
        await ensure_started(server, request.app)
        form = dict(await read_form(request) or [])
        verifier = server.identity_verifier
        if verifier is None:
            return html(pages.error_page("Identity verification is not available here."), 404)
        attempt = await anyio.to_thread.run_sync(
            lambda: flow.verify_begin(
                server,
                form.get("tx", ""),
                request.cookies.get(cfg.cookie_name),
                form,
                client_context(request),
            )
        )
        if attempt.result is not None:
            return render_flow(server, attempt.result)
        assert attempt.claim is not None
        patient = await verifier(attempt.claim)
        result = await anyio.to_thread.run_sync(flow.verify_end, server, attempt, patient)
        return render_flow(server, result)

    @router.post("/auth/login/card")
    async def login_card(request: Request) -> Response:
        await ensure_started(server, request.app)
        if not cfg.client_cert_header:
            return html(pages.error_page("Card sign-in is not configured on this server."), 404)
        form = dict(await read_form(request) or [])
        header = request.headers.get(cfg.client_cert_header, "")
        subject = certificate_subject(header) if header else None
        result = await anyio.to_thread.run_sync(
            lambda: flow.card_login(
                server,
                form.get("tx", ""),
                request.cookies.get(cfg.cookie_name),
                subject,
                client_context(request),
            )
        )
        return render_flow(server, result)

    @router.post("/auth/consent")
    async def consent(request: Request) -> Response:
        await ensure_started(server, request.app)
        pairs = await read_form(request) or []
        form = dict(pairs)
        if "search" in form:  # the clinician's "Find a patient" button: same page, narrowed
            found = await anyio.to_thread.run_sync(
                flow.search_patients,
                server,
                form.get("tx", ""),
                request.cookies.get(cfg.cookie_name),
                form.get("find", ""),
            )
            return render_flow(server, found)
        result = await anyio.to_thread.run_sync(
            lambda: flow.consent(
                server,
                form.get("tx", ""),
                request.cookies.get(cfg.cookie_name),
                deny="deny" in form,
                chosen_scopes=[v for k, v in pairs if k == "scope"],
                patient=form.get("patient"),
            )
        )
        return render_flow(server, result)

    async def _endpoint(request: Request, path: str, call: Any) -> Response:
        await ensure_started(server, request.app)
        form = await read_form(request)
        if form is None:
            return oauth_error("invalid_request", f"the body must be {FORM}")
        req = oauth_request(request, path, form)
        resp: OAuthResponse = await anyio.to_thread.run_sync(call, req)
        return render_oauth(resp)

    @router.post("/auth/token")
    async def token(request: Request) -> Response:
        return await _endpoint(request, "/auth/token", server.oauth.create_token_response)

    @router.post("/auth/revoke")
    async def revoke(request: Request) -> Response:
        return await _endpoint(
            request,
            "/auth/revoke",
            lambda r: server.oauth.create_endpoint_response("revocation", r),
        )

    @router.post("/auth/introspect")
    async def introspect(request: Request) -> Response:
        return await _endpoint(
            request,
            "/auth/introspect",
            lambda r: server.oauth.create_endpoint_response("introspection", r),
        )

    manage_cookie = cfg.cookie_name + "_manage"

    def manage_response(body: str, status: int = 200, secret: str | None = None) -> Response:
        response = html(body, status)
        if secret is not None:
            response.set_cookie(
                manage_cookie,
                secret,
                max_age=manage.SESSION_S,
                path="/auth/manage",
                secure=cfg.secure_cookies,
                httponly=True,
                samesite="strict",
            )
        return response

    async def manage_session(request: Request) -> manage.Session | None:
        secret = request.cookies.get(manage_cookie)
        return await anyio.to_thread.run_sync(manage.session, server, secret)

    async def manage_listing(who: manage.Session, notice: str = "") -> str:
        apps = await anyio.to_thread.run_sync(manage.connected_apps, server, who.username)
        return pages.manage_page(who, apps, notice)

    @router.get("/auth/manage")
    async def manage_home(request: Request) -> Response:
        await ensure_started(server, request.app)
        who = await manage_session(request)
        if who is None:
            return manage_response(pages.manage_login_page())
        return manage_response(await manage_listing(who))

    @router.post("/auth/manage/login")
    async def manage_login(request: Request) -> Response:
        await ensure_started(server, request.app)
        form = dict(await read_form(request) or [])
        try:
            secret, who = await anyio.to_thread.run_sync(
                manage.sign_in,
                server,
                form.get("username", ""),
                form.get("password", ""),
                client_context(request),
            )
        except accounts.LoginFailed as failed:
            return manage_response(pages.manage_login_page(str(failed)), 401)
        return manage_response(await manage_listing(who), secret=secret)

    @router.post("/auth/manage/revoke")
    async def manage_revoke(request: Request) -> Response:
        await ensure_started(server, request.app)
        form = dict(await read_form(request) or [])
        who = await manage_session(request)
        if who is None:
            return manage_response(pages.manage_login_page("Sign in again to continue."), 401)
        if not secrets.compare_digest(form.get("form_token", ""), who.form_token):
            return manage_response(pages.error_page("This form has expired. Reload the page."), 403)
        done = await anyio.to_thread.run_sync(
            manage.revoke, server, who.username, form.get("grant", "")
        )
        notice = "The app can no longer reach your record." if done else "No such app."
        return manage_response(await manage_listing(who, notice), 200 if done else 404)

    @router.post("/auth/manage/logout")
    async def manage_logout(request: Request) -> Response:
        await ensure_started(server, request.app)
        form = dict(await read_form(request) or [])
        who = await manage_session(request)
        if who is not None and secrets.compare_digest(form.get("form_token", ""), who.form_token):
            secret = request.cookies.get(manage_cookie)
            await anyio.to_thread.run_sync(manage.sign_out, server, secret)
        response = manage_response(pages.info_page("Signed out", "You are signed out."))
        response.delete_cookie(manage_cookie, path="/auth/manage")
        return response

    @router.get("/auth/ehr-launch")
    async def ehr_launch(
        request: Request, launch_uri: str, patient: str, encounter: str = ""
    ) -> Response:
        """Development stand-in for an EHR: record a context and open the app's launch URL."""
        if cfg.production:
            return html(pages.error_page("Not available."), 404)
        await ensure_started(server, request.app)
        target = urlsplit(launch_uri)
        if target.scheme != "http" or target.hostname not in LOOPBACK_HOSTS:
            return html(pages.error_page("The development EHR only launches loopback apps."), 400)
        launch = await anyio.to_thread.run_sync(
            lambda: server.launches.create(patient=patient, encounter=encounter or None)
        )
        sep = "&" if target.query else "?"
        return RedirectResponse(
            launch_uri + sep + urlencode({"iss": cfg.base_url, "launch": launch}), status_code=302
        )

    return router
