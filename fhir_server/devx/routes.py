"""The developer routes outside the FHIR base: `/` (landing page), `/openapi.json`,
`/openapi` and `/openapi/{tag}` (browsable), `/docs/{name}` (the project's Markdown docs,
when the source tree is there). See docs/rest.md, "For developers".

`/` answers by `Accept`: a FHIR client (`application/fhir+json`) gets the
CapabilityStatement exactly as `GET /fhir/metadata` answers it (with `Content-Location`
naming that URL), since a client pointed at the server's root most likely wants to
discover it; a plain JSON client (`application/json`) gets the links as an object; anyone
else the HTML page.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from fhir_server.capability import capability_statement
from fhir_server.config import Settings
from fhir_server.devx import pages
from fhir_server.devx.openapi import openapi_document
from fhir_server.rest.messages import HttpRequest
from fhir_server.rest.render import to_starlette
from smart_auth.config import SEED_DIR

ROOT = Path(__file__).resolve().parents[2]
HTML_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def doc_files() -> dict[str, Path]:
    """The Markdown docs of the source tree (README.md, docs/*.md); none when installed
    without it."""
    found: dict[str, Path] = {}
    if (ROOT / "README.md").is_file() and (ROOT / "docs").is_dir():
        found["README.md"] = ROOT / "README.md"
        for path in sorted((ROOT / "docs").glob("*.md")):
            found[path.name] = path
    return found


def _seed_logins() -> list[dict[str, Any]]:
    data = json.loads((SEED_DIR / "logins.json").read_text(encoding="utf-8"))
    return list(data["logins"])


def links(settings: Settings) -> dict[str, str]:
    base = settings.base_url
    origin = _origin(base)
    return {
        "fhir_base": base,
        "capability_statement": f"{base}/metadata",
        "smart_configuration": f"{base}/.well-known/smart-configuration",
        "openapi": f"{origin}/openapi.json",
        "api_reference": f"{origin}/openapi",
        "portal": f"{origin}/portal/",
        "docs": f"{origin}/docs/README.md",
    }


def _origin(base: str) -> str:
    parts = urlsplit(base)
    return f"{parts.scheme}://{parts.netloc}"


def _openapi(request: Request) -> dict[str, Any]:
    state = request.app.state
    cached = getattr(state, "openapi", None)
    if cached is None:
        ctx = state.ctx
        capability = ctx.capability or capability_statement(ctx)
        cached = openapi_document(capability, ctx.operations)
        state.openapi = cached
    return cached  # type: ignore[no-any-return]


def build_routes(settings: Settings) -> list[Route]:
    docs = doc_files()

    async def landing(request: Request) -> Response:
        accept = request.headers.get("accept", "").lower()
        if "fhir+json" in accept:
            answer = await request.app.state.pipeline.handle(
                HttpRequest(
                    method="GET",
                    path=("metadata",),
                    query=request.scope.get("query_string", b""),
                    headers={k.lower(): v for k, v in request.headers.items()},
                )
            )
            response = to_starlette(answer)
            response.headers["Content-Location"] = f"{settings.base_url}/metadata"
            return response
        if "application/json" in accept and "text/html" not in accept:
            return JSONResponse(links(settings))
        html = pages.landing(
            base=settings.base_url,
            origin=_origin(settings.base_url),
            docs=list(docs),
            logins=None if settings.production else _seed_logins(),
        )
        return HTMLResponse(html, headers=HTML_HEADERS)

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(_openapi(request), headers={"Access-Control-Allow-Origin": "*"})

    async def openapi_index(request: Request) -> Response:
        return HTMLResponse(pages.openapi_index(_openapi(request)), headers=HTML_HEADERS)

    async def openapi_tag(request: Request) -> Response:
        html = pages.openapi_tag(_openapi(request), request.path_params["tag"])
        if html is None:
            return HTMLResponse(
                pages.page("Not found", "<h1>No such resource type in this API</h1>"), 404
            )
        return HTMLResponse(html, headers=HTML_HEADERS)

    async def doc(request: Request) -> Response:
        path = docs.get(request.path_params["name"])
        if path is None:
            return PlainTextResponse("no such document", status_code=404)
        return PlainTextResponse(path.read_text(encoding="utf-8"), headers=HTML_HEADERS)

    return [
        Route("/", landing, methods=["GET", "HEAD"]),
        Route("/openapi.json", openapi_json, methods=["GET", "HEAD"]),
        Route("/openapi", openapi_index, methods=["GET", "HEAD"]),
        Route("/openapi/{tag}", openapi_tag, methods=["GET", "HEAD"]),
        Route("/docs/{name}", doc, methods=["GET", "HEAD"]),
    ]
