"""Reading a request body safely: size, media type, JSON syntax, depth and key rules.

FHIR JSON never has property names starting with "$" or containing "." (and MongoDB would
read them as operators or paths), so they are refused before anything else sees them.
See https://hl7.org/fhir/R4/json.html.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from fhir_server.errors import BadRequest, Issue, PayloadTooLarge, UnsupportedMediaType, UriTooLong

JSON_TYPES = frozenset({"application/fhir+json", "application/json", "application/json+fhir"})
PATCH_TYPES = frozenset({"application/json-patch+json"})
FORM_TYPE = "application/x-www-form-urlencoded"
# Longer query strings answer 414 (https://hl7.org/fhir/R4/http.html#search: POST
# [type]/_search takes the same parameters in a form body, with no such limit).
MAX_QUERY_BYTES = 64 * 1024


def media_type(content_type: str | None) -> str | None:
    if not content_type:
        return None
    return content_type.split(";", 1)[0].strip().lower()


def check_media_type(content_type: str | None, allowed: frozenset[str]) -> None:
    mt = media_type(content_type)
    # A missing Content-Type is read as JSON: curl users forget it, and nothing is ambiguous.
    if mt is not None and mt not in allowed:
        raise UnsupportedMediaType(
            f"Content-Type {mt!r} is not supported here; use one of: {', '.join(sorted(allowed))}"
        )


def check_query_length(query_string: bytes) -> None:
    if len(query_string) > MAX_QUERY_BYTES:
        raise UriTooLong(
            f"the query string of {len(query_string)} bytes exceeds the {MAX_QUERY_BYTES} "
            "limit; send long searches as POST [type]/_search with a form body"
        )


async def read_limited(chunks: AsyncIterator[bytes], declared: str | None, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to pass `limit`: from its
    Content-Length before reading, else while it streams in (chunked bodies), so a huge
    body is never read whole nor parsed."""
    if declared and declared.strip().isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared.strip()} bytes exceeds the {limit} limit")
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the {limit} byte limit")
        parts.append(chunk)
    return b"".join(parts)


def check_entry_sizes(bundle: Any, limit: int) -> None:
    """Every resource of a Bundle within the one-resource limit, checked before any entry
    runs: a batch must not store its first entries and then fail on a later one that no
    database could hold."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        return
    entries = bundle.get("entry")
    for i, entry in enumerate(entries if isinstance(entries, list) else []):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict):
            size = len(orjson.dumps(resource))
            if size > limit:
                raise PayloadTooLarge(
                    f"entry {i}: a resource of {size} bytes exceeds the {limit} byte limit",
                    issues=[
                        Issue(
                            "too-costly",
                            f"resource of {size} bytes exceeds the {limit} byte limit",
                            expression=(f"Bundle.entry[{i}].resource",),
                        )
                    ],
                )


def parse_json(raw: bytes, *, max_bytes: int, max_depth: int) -> Any:
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"request body of {len(raw)} bytes exceeds the {max_bytes} limit")
    if not raw.strip():
        raise BadRequest("the request body is empty", code="structure")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}", code="structure") from None
    check_tree(value, max_depth=max_depth)
    return value


def check_tree(value: Any, *, max_depth: int) -> None:
    """Refuse nesting deeper than max_depth and keys MongoDB or FHIR cannot accept."""
    # Iterative, so a hostile body cannot exhaust the Python stack.
    stack: list[tuple[Any, int, str]] = [(value, 1, "")]
    while stack:
        node, depth, path = stack.pop()
        if depth > max_depth and isinstance(node, dict | list):
            raise BadRequest(
                f"JSON nesting is deeper than the limit of {max_depth}",
                issues=[
                    Issue(
                        "structure", f"nesting deeper than {max_depth}", expression=(path or "$",)
                    )
                ],
            )
        if isinstance(node, dict):
            for key, child in node.items():
                if key.startswith("$") or "." in key or "\x00" in key:
                    where = f"{path}.{key}" if path else key
                    raise BadRequest(
                        f"property name {key!r} is not allowed (no leading '$', no '.')",
                        issues=[
                            Issue(
                                "structure",
                                f"property name {key!r} is not allowed",
                                expression=(where,),
                            )
                        ],
                    )
                stack.append((child, depth + 1, f"{path}.{key}" if path else key))
        elif isinstance(node, list):
            for i, child in enumerate(node):
                stack.append((child, depth + 1, f"{path}[{i}]"))
