"""A Binary as its raw content (https://hl7.org/fhir/R4/binary.html#rest, "Binary resources
behave slightly differently"): both ways, on top of the one FHIR JSON path.

- **Upload**: `POST [base]/Binary` (or `PUT [base]/Binary/[id]`) with the file's own
  Content-Type and the `X-Security-Context` header naming the resource it belongs to. The
  body becomes the Binary resource a JSON client would have sent, and then takes the same
  path: validation, the access policy, the write rules and the attachment checks
  (portal/attachments.py).
- **Read**: `GET [base]/Binary/[id]` whose Accept names no FHIR JSON type (nor `*/*`)
  answers the decoded content with the Binary's own Content-Type when Accept names it (or
  its `type/*`), 406 otherwise. The read is the same narrowed read (hidden answers 404 as
  missing, before anything else is looked at) and is audited like any read.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from fhir_server.rest.body import JSON_TYPES, media_type
from fhir_server.rest.headers import version_headers
from fhir_server.rest.messages import FhirRequest, FhirResponse
from fhir_server.rest.render import NotAcceptable
from fhir_server.storage.store import Version

# The one resource type whose body may be raw content (FHIR R4, binary.html#rest).
BINARY = "Binary"
# Any of these in Accept asks for the FHIR JSON Binary.
_JSON_OR_ANY = JSON_TYPES | {"*/*", "application/*", "application/fhir+xml"}
# Raw content is the uploader's bytes: never sniffed, never run as a page of this origin.
_RAW_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"}


def is_raw_binary(method: str, path: list[str], content_type: str | None) -> bool:
    """A write of a Binary whose body is not FHIR JSON."""
    mt = media_type(content_type)
    if mt is None or mt in JSON_TYPES or not path or path[0] != BINARY:
        return False
    return (method == "POST" and len(path) == 1) or (method == "PUT" and len(path) == 2)


def as_resource(path: list[str], content_type: str, raw: bytes, headers: dict[str, str]) -> Any:
    """The Binary resource standing for the raw body (`data` base64, `contentType` as sent,
    `securityContext` from the header when given)."""
    resource: dict[str, Any] = {
        "resourceType": BINARY,
        "contentType": content_type.strip(),
        "data": base64.b64encode(raw).decode("ascii"),
    }
    if len(path) == 2:
        resource["id"] = path[1]
    context = headers.get("x-security-context")
    if context:
        resource["securityContext"] = {"reference": context.strip()}
    return resource


def _accepted(req: FhirRequest) -> list[str]:
    accept = req.header("accept") or ""
    return [t for t in (media_type(a) for a in accept.split(",")) if t]


def wants_raw(req: FhirRequest) -> bool:
    """A read of one Binary whose Accept asks for no FHIR format (and no `_format`)."""
    if req.method not in ("GET", "HEAD") or len(req.path) != 2 or req.path[0] != BINARY:
        return False
    if req.in_bundle or req.param("_format") is not None:
        return False
    types = _accepted(req)
    return bool(types) and not any(t in _JSON_OR_ANY for t in types)


def raw_response(ctx_base_url: str, req: FhirRequest, v: Version) -> FhirResponse:
    """The Binary's content as the answer to a read that asked for it (`wants_raw`)."""
    resource = v.resource or {}
    mt = media_type(resource.get("contentType")) or ""
    types = _accepted(req)
    if mt not in types and f"{mt.split('/', 1)[0]}/*" not in types:
        raise NotAcceptable(
            f"{v.rt}/{v.id} is {mt or 'of no content type'}; ask for it or for FHIR JSON"
        )
    try:
        data = base64.b64decode(resource.get("data") or "", validate=True)
    except (ValueError, binascii.Error):
        data = b""
    headers = {**version_headers(v, ctx_base_url), **_RAW_HEADERS}
    return FhirResponse(
        status=200,
        raw=data,
        media_type=str(resource.get("contentType")),
        headers=headers,
        versions=(v,),
    )
