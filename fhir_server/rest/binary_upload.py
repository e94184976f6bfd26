"""A Binary sent as its raw content: `POST [base]/Binary` (or `PUT [base]/Binary/[id]`) with
the file's own Content-Type and the `X-Security-Context` header naming the resource it
belongs to (https://hl7.org/fhir/R4/binary.html#rest, "Binary resources behave slightly
differently"). The body becomes the Binary resource a JSON client would have sent, and then
takes the same path: validation, the access policy, the write rules and the attachment
checks (portal/attachments.py). Reads still answer the JSON Binary (see docs/portal.md).
"""

from __future__ import annotations

import base64
from typing import Any

from fhir_server.rest.body import JSON_TYPES, media_type

# The one resource type whose body may be raw content (FHIR R4, binary.html#rest).
BINARY = "Binary"


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
