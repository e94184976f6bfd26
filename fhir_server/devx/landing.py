"""The landing page at `/` and the docs at `/docs/` (issue 16, developer experience item 2).

`/` says what the server is and links to what a developer needs first: the FHIR base, the
CapabilityStatement, the SMART configuration, the OpenAPI document (when the app has one),
the portal app and the docs; in development it also lists the seed logins (usernames and
who they are; their passwords stay in seed_data/logins.json, so a development server seen
from a network does not hand them out). A request whose Accept asks for JSON and not HTML
gets the same links as a small JSON document (docs/rest.md, "Landing page").

The docs are the repository's docs/*.md, served as text/markdown: only the files present at
start-up, by exact name, so no path from the URL ever reaches the file system.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

from fhir_server.config import Settings

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DOCS_DIR = PROJECT_ROOT / "docs"
LOGINS_FILE = PROJECT_ROOT / "seed_data" / "logins.json"
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"
    ),
}
STYLE = (
    "body{font:16px/1.5 system-ui,sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem;"
    "color:#1b1b1b}code{background:#f0f0f0;padding:0 .2em}table{border-collapse:collapse}"
    "td,th{border:1px solid #999;padding:.2rem .5rem;text-align:left}a{color:#0b4f9c}"
)


def wants_json(accept: str) -> bool:
    """JSON when the client names a JSON type and not HTML (a browser names text/html)."""
    accept = accept.lower()
    return "json" in accept and "text/html" not in accept


def links(settings: Settings, openapi: str | None) -> dict[str, str]:
    base = urlsplit(settings.base_url).path.rstrip("/") or "/fhir"
    out = {
        "fhirBase": settings.base_url,
        "capabilityStatement": f"{base}/metadata",
        "smartConfiguration": f"{base}/.well-known/smart-configuration",
        "portal": "/portal/",
        "manageApps": "/auth/manage",
        "docs": "/docs/",
    }
    if openapi:
        out["openapi"] = openapi
    return out


def seed_logins(settings: Settings) -> list[dict[str, str]]:
    """The development logins without their passwords; none in production."""
    if settings.production or not LOGINS_FILE.is_file():
        return []
    doc = json.loads(LOGINS_FILE.read_text(encoding="utf-8"))
    return [
        {"username": x["username"], "name": x.get("name", ""), "level": x.get("login", "")}
        for x in doc.get("logins", [])
    ]


def page(settings: Settings, link: dict[str, str], logins: list[dict[str, str]]) -> str:
    e = html.escape
    labels = {
        "capabilityStatement": "CapabilityStatement (what this server supports)",
        "smartConfiguration": "SMART configuration (authorization endpoints)",
        "openapi": "API reference (OpenAPI 3, generated from the CapabilityStatement)",
        "portal": "Patient portal web app",
        "manageApps": "Apps you approved (revoke access)",
        "docs": "Documentation",
    }
    items = "".join(
        f'<li><a href="{e(link[k])}">{e(label)}</a></li>'
        for k, label in labels.items()
        if k in link
    )
    rows = "".join(
        f"<tr><td><code>{e(x['username'])}</code></td><td>{e(x['name'])}</td>"
        f"<td>{e(x['level'])}</td></tr>"
        for x in logins
    )
    dev = (
        "<h2>Development logins</h2><p>The seed population's logins (development only). "
        "Their passwords are public test data in <code>seed_data/logins.json</code>; a token "
        'in one command: <code>fhir-server token --login james.carter --scope "patient/*.rs"'
        "</code>.</p><table><tr><th>Username</th><th>Who</th><th>Login level</th></tr>"
        f"{rows}</table>"
        if logins
        else ""
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>MHS FHIR R4 server</title><style>{STYLE}</style></head><body><main>"
        "<h1>MHS FHIR R4 server</h1><p>An open-source FHIR R4 (4.0.1) health-record server "
        "for a military-health patient portal, with a SMART App Launch 2.2 authorization "
        "server. Every FHIR request except the CapabilityStatement needs a bearer token.</p>"
        f"<p>FHIR base URL: <code>{e(link['fhirBase'])}</code></p><ul>{items}</ul>{dev}"
        "</main></body></html>"
    )


def install(app: FastAPI, settings: Settings, *, openapi: str | None = None) -> None:
    link = links(settings, openapi)
    logins = seed_logins(settings)
    body = page(settings, link, logins)
    docs = {p.name: p for p in sorted(DOCS_DIR.glob("*.md"))} if DOCS_DIR.is_dir() else {}

    async def landing(request: Request) -> Response:
        if wants_json(request.headers.get("accept", "")):
            doc: dict[str, Any] = {"server": "MHS FHIR R4 server", "fhirVersion": "4.0.1"}
            doc["links"] = link
            if logins:
                doc["developmentLogins"] = logins
            return JSONResponse(doc, headers=HEADERS)
        return HTMLResponse(body, headers=HEADERS)

    async def doc_index(_: Request) -> Response:
        items = "".join(
            f'<li><a href="/docs/{html.escape(n)}">{html.escape(n)}</a></li>' for n in docs
        )
        return HTMLResponse(
            '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Docs</title>'
            f"<style>{STYLE}</style></head><body><main><h1>Documentation</h1><ul>{items}"
            '</ul><p><a href="/">Back</a></p></main></body></html>',
            headers=HEADERS,
        )

    async def doc_file(request: Request) -> Response:
        path = docs.get(request.path_params.get("name", ""))
        if path is None:
            return PlainTextResponse("Not found.", 404, headers=HEADERS)
        return PlainTextResponse(
            path.read_text(encoding="utf-8"), media_type="text/markdown", headers=HEADERS
        )

    app.add_route("/", landing, methods=["GET"], include_in_schema=False)
    app.add_route("/docs/", doc_index, methods=["GET"], include_in_schema=False)
    app.add_route("/docs/{name}", doc_file, methods=["GET"], include_in_schema=False)
