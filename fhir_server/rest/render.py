"""Turning a FhirResponse into HTTP: format negotiation, _pretty and Prefer: return.

`render` and `error_response` build a framework-free `HttpResponse` (the pipeline's);
`render_error` is the same error as a Starlette response, for the framework's own
exception handlers (unknown URLs, the authorization server's routes).

See https://hl7.org/fhir/R4/http.html#mime-type, #general (_format, _pretty) and
#ops (Prefer: return=minimal | representation | OperationOutcome).
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response, StreamingResponse

from fhir_server.errors import FhirError, Issue
from fhir_server.rest.headers import prefer
from fhir_server.rest.messages import FhirRequest, FhirResponse, HttpResponse

FHIR_JSON = "application/fhir+json"
_JSON_FORMATS = {
    "json",
    "application/json",
    "application/fhir+json",
    "application/json+fhir",
    "text/json",
}

# Bulk Data file downloads ask for ndjson; those responses carry their own media type.
_ACCEPT_ANY = {"*/*", "application/*", "application/fhir+ndjson", "application/ndjson"}


class NotAcceptable(FhirError):
    def __post_init__(self) -> None:
        self.status = 406
        self.code = "not-supported"
        super().__post_init__()


def negotiate(req: FhirRequest) -> str:
    """The media type to answer with; this server speaks FHIR JSON only."""
    fmt = req.param("_format")
    if fmt is not None:
        if fmt.split(";")[0].strip().lower() not in _JSON_FORMATS:
            raise NotAcceptable(f"_format {fmt!r} is not supported; this server speaks JSON")
        return "application/json" if fmt.strip() == "application/json" else FHIR_JSON
    accept = req.header("accept")
    if not accept:
        return FHIR_JSON
    types = [a.split(";")[0].strip().lower() for a in accept.split(",")]
    if any(t in _JSON_FORMATS or t in _ACCEPT_ANY for t in types):
        return "application/json" if types[0] == "application/json" else FHIR_JSON
    raise NotAcceptable(f"Accept {accept!r} cannot be met; this server speaks FHIR JSON")


def dumps(body: Any, pretty: bool) -> bytes:
    return orjson.dumps(body, option=orjson.OPT_INDENT_2 if pretty else 0)


def _write_outcome(resp: FhirResponse) -> dict[str, Any]:
    text = f"{resp.location or 'resource'}: {resp.status}"
    return {
        "resourceType": "OperationOutcome",
        "issue": [Issue("informational", text, severity="information").to_json()],
    }


def render(req: FhirRequest, resp: FhirResponse, media: str = FHIR_JSON) -> HttpResponse:
    if resp.stream is not None:
        return HttpResponse(
            status=resp.status,
            headers=dict(resp.headers),
            stream=resp.stream,
            media_type=resp.media_type,
        )
    if resp.raw is not None:
        return HttpResponse(
            status=resp.status,
            headers=dict(resp.headers),
            body=b"" if req.method == "HEAD" else resp.raw,
            media_type=resp.media_type,
        )
    body = resp.body
    is_write = req.method in ("POST", "PUT", "PATCH") and resp.location is not None
    if is_write and body is not None:
        wanted = prefer(req.header("prefer")).get("return", "representation")
        if wanted == "minimal":
            body = None
        elif wanted == "operationoutcome":
            body = _write_outcome(resp)
    headers = dict(resp.headers)
    pretty = (req.param("_pretty") or "").lower() == "true"
    if req.method == "HEAD" or body is None:
        return HttpResponse(
            status=resp.status,
            headers=headers,
            media_type=None if body is None else f"{media}; charset=utf-8",
        )
    encoded = resp.encoded if body is resp.body and not pretty else None
    return HttpResponse(
        status=resp.status,
        headers=headers,
        body=encoded if encoded is not None else dumps(body, pretty),
        media_type=f"{media}; charset=utf-8",
    )


def error_response(exc: FhirError, pretty: bool = False) -> HttpResponse:
    """The OperationOutcome of an error, with its status and headers."""
    return HttpResponse(
        status=exc.status,
        headers=dict(exc.headers),
        body=dumps(exc.outcome(), pretty),
        media_type=f"{FHIR_JSON}; charset=utf-8",
    )


def to_starlette(answer: HttpResponse) -> Response:
    if answer.stream is not None:
        return StreamingResponse(
            answer.stream,
            status_code=answer.status,
            headers=answer.headers,
            media_type=answer.media_type,
        )
    return Response(
        content=answer.body,
        status_code=answer.status,
        headers=answer.headers,
        media_type=answer.media_type,
    )


def render_error(exc: FhirError, pretty: bool = False) -> Response:
    return to_starlette(error_response(exc, pretty))
