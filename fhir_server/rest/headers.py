"""HTTP header values FHIR uses: ETag / If-Match, Last-Modified, Prefer.

See https://hl7.org/fhir/R4/http.html#versioning and #ops (Prefer).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import format_datetime

from fhir_server.errors import BadRequest
from fhir_server.storage.store import Version

_ETAG = re.compile(r'^\s*(?:W/)?"?(\d+)"?\s*$')


def parse_if_match(value: str | None) -> int | None:
    if value is None:
        return None
    m = _ETAG.match(value)
    if not m:
        raise BadRequest(f'If-Match {value!r} is not a version ETag like W/"3"')
    return int(m.group(1))


def http_date(t: datetime) -> str:
    # BSON dates come back with the driver's own UTC tzinfo, which usegmt refuses.
    return format_datetime(t.astimezone(UTC), usegmt=True)


def version_headers(v: Version, base_url: str, *, location: bool = False) -> dict[str, str]:
    headers = {"ETag": v.etag, "Last-Modified": http_date(v.lu)}
    if location:
        headers["Location"] = f"{base_url}/{v.rt}/{v.id}/_history/{v.vid}"
    return headers


def prefer(value: str | None) -> dict[str, str]:
    """Parse `Prefer: return=minimal, handling=strict` into {"return": ..., "handling": ...}."""
    out: dict[str, str] = {}
    for part in (value or "").replace(";", ",").split(","):
        if "=" in part:
            k, v = part.split("=", 1)
            out[k.strip().lower()] = v.strip().strip('"').lower()
    return out
