"""Framework-free requests and responses: what the pipeline, routes and bundle entries speak.

`HttpRequest` / `HttpResponse` are one HTTP exchange as any web framework hands it over and
takes it back (the FastAPI route in app.py only converts); the pipeline (fhir_server/
pipeline.py) turns an `HttpRequest` into a `FhirRequest`; a batch or transaction entry
becomes one too; `dispatch` answers both with a `FhirResponse`. So an interaction behaves
the same whether it arrives on its own or inside a Bundle.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession

from fhir_server.access.policy import OPEN, AccessPolicy
from fhir_server.storage.store import Version

Doc = dict[str, Any]


@dataclass(frozen=True)
class HttpRequest:
    """One HTTP request to the FHIR endpoint (https://hl7.org/fhir/R4/http.html)."""

    method: str
    # The path below the FHIR base, split on "/", empty segments dropped.
    path: tuple[str, ...]
    # The query string as sent (percent-encoded, without "?").
    query: bytes = b""
    # Lower-case header names.
    headers: Mapping[str, str] = field(default_factory=dict)
    # The body, whole or as the chunks arrive: the pipeline reads it within its size limit
    # (a body known to be too large is refused before it is read).
    body: bytes | AsyncIterable[bytes] = b""


@dataclass(frozen=True)
class HttpResponse:
    """The answer, ready for the wire: `media_type` becomes Content-Type."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    media_type: str | None = None
    # A body sent as its chunks come (an `$export` file), in place of `body`: the server
    # holds one chunk at a time, never the whole file.
    stream: AsyncIterator[bytes] | None = None


@dataclass
class FhirRequest:
    method: str
    # Path below the FHIR base, split on "/", e.g. ["Patient", "123", "_history", "2"].
    path: list[str]
    params: list[tuple[str, str]] = field(default_factory=list)
    # Lower-case header names.
    headers: dict[str, str] = field(default_factory=dict)
    # Parsed JSON body (already checked for size, depth and key rules), if any.
    body: Any = None
    # Set when the request runs inside a transaction bundle.
    session: AsyncClientSession | None = None
    in_bundle: bool = False
    # A transaction pre-assigns ids of created resources so references can be resolved.
    assigned_id: str | None = None
    # The idempotency claims of a transaction entry's ifNoneExist, read before the
    # transaction searched it (rest/idempotency.py).
    claims: dict[str, Any] | None = None
    # True once the body passed validation (a transaction validates before it writes).
    validated: bool = False
    # What the request's access token lets it see and do.
    policy: AccessPolicy = OPEN

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def param(self, name: str) -> str | None:
        for k, v in self.params:
            if k == name:
                return v
        return None


@dataclass
class FhirResponse:
    status: int
    body: Doc | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # The resource this response is about (for Prefer: return=minimal and bundle entries).
    location: str | None = None
    # A body that is not FHIR JSON (a $export manifest or ndjson file), sent as is with its
    # own media type; `body` is then unused.
    raw: bytes | None = None
    media_type: str | None = None
    # Such a body as its chunks come, in place of `raw` (an `$export` file, up to 16 MiB).
    stream: AsyncIterator[bytes] | None = None
    # `body` already serialised (compact JSON), for a constant body sent often: the
    # CapabilityStatement (590 KB, about 1 ms of CPU to serialise) answers every probe.
    encoded: bytes | None = None
    # The stored versions the answer is about, as the store returned them (a read: the one
    # read; a write: the new one and the one it replaced), whose compartments and labels
    # the audit event names (access/audit.py, `note_response`) without reading them again.
    versions: tuple[Version, ...] = ()
