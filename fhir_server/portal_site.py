"""The portal web app's files at ``/portal/`` (docs/portal-app.md).

The app (``portal_app/``) is a static SMART public client: these routes only hand out its
files and the two libraries' own published browser builds from ``portal_app/node_modules``
(installed by ``make portal``, which ``make serve`` and ``make test`` run). The app reaches
records through ``/fhir`` and ``/auth`` like any other app; nothing here reads the database.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response

APP_DIR = Path(__file__).resolve().parent.parent / "portal_app"
# The served names, each to its file: nothing else under portal_app/ is reachable.
FILES = {
    "": ("index.html", "text/html; charset=utf-8"),
    "app.js": ("app.js", "text/javascript; charset=utf-8"),
    "appointments.js": ("appointments.js", "text/javascript; charset=utf-8"),
    "clipboard.js": ("clipboard.js", "text/javascript; charset=utf-8"),
    "prescriptions.js": ("prescriptions.js", "text/javascript; charset=utf-8"),
    "style.css": ("style.css", "text/css; charset=utf-8"),
    "vendor/fhir-client.js": (
        "node_modules/fhirclient/build/fhir-client.js",
        "text/javascript; charset=utf-8",
    ),
    "vendor/chart.umd.js": ("node_modules/chart.js/dist/chart.umd.js", "text/javascript"),
}
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # Scripts and calls from this origin only; blob: for the downloads the app builds.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "Cache-Control": "no-cache",
}
MISSING = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Portal not installed'
    "</title></head><body><main><h1>The portal app is not installed</h1><p>Its JavaScript "
    "libraries are missing. Run <code>make portal</code> (it runs <code>npm ci</code> in "
    "<code>portal_app/</code>) and reload.</p></main></body></html>"
)


def install(app: FastAPI) -> None:
    async def portal(request: Request) -> Response:
        name = request.path_params.get("name", "")
        if name not in FILES:
            return HTMLResponse("<!doctype html><title>Not found</title><p>Not found.", 404)
        rel, media = FILES[name]
        path = APP_DIR / rel
        if not path.is_file():
            return HTMLResponse(MISSING, 503, headers=HEADERS)
        return FileResponse(path, media_type=media, headers=HEADERS)

    async def to_slash(_: Request) -> Response:
        return RedirectResponse("/portal/", status_code=308)

    app.add_route("/portal", to_slash, methods=["GET"], include_in_schema=False)
    app.add_route("/portal/{name:path}", portal, methods=["GET"], include_in_schema=False)
