"""Errors that become an OperationOutcome.

Each error class carries its HTTP status and its OperationOutcome issue code
(https://hl7.org/fhir/R4/valueset-issue-type.html), so one handler in the app renders
every failure the same way and no route maps exceptions to statuses by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Issue:
    """One OperationOutcome.issue."""

    code: str
    diagnostics: str
    severity: str = "error"
    expression: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code,
            "diagnostics": self.diagnostics,
        }
        if self.expression:
            out["expression"] = list(self.expression)
        return out


def operation_outcome(issues: list[Issue] | tuple[Issue, ...]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [i.to_json() for i in issues]}


@dataclass
class FhirError(Exception):
    """Base class: a failure the client should see as an OperationOutcome."""

    diagnostics: str
    issues: list[Issue] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 500
    code: str = "exception"

    def __post_init__(self) -> None:
        super().__init__(self.diagnostics)
        if not self.issues:
            self.issues = [Issue(code=self.code, diagnostics=self.diagnostics)]

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(self.issues)


def _kind(status: int, code: str) -> type[FhirError]:
    """Make a FhirError subclass with a fixed status and default issue code."""

    @dataclass
    class _Err(FhirError):
        def __post_init__(self) -> None:
            self.status = status
            if self.code == "exception":
                self.code = code
            super().__post_init__()

    return _Err


class BadRequest(_kind(400, "invalid")):  # type: ignore[misc]
    """Malformed request or resource (HTTP 400)."""


class NotSupported(_kind(400, "not-supported")):  # type: ignore[misc]
    """A parameter or feature this server does not support (HTTP 400)."""


class Unauthorized(_kind(401, "login")):  # type: ignore[misc]
    """No or bad credentials (HTTP 401)."""


class Forbidden(_kind(403, "forbidden")):  # type: ignore[misc]
    """Authenticated but not allowed (HTTP 403)."""


class NotFound(_kind(404, "not-found")):  # type: ignore[misc]
    """Unknown resource, type or version (HTTP 404)."""


class MethodNotAllowed(_kind(405, "not-supported")):  # type: ignore[misc]
    """Interaction not allowed on this URL (HTTP 405)."""


class Conflict(_kind(409, "conflict")):  # type: ignore[misc]
    """The request conflicts with the stored state (HTTP 409)."""


class Gone(_kind(410, "deleted")):  # type: ignore[misc]
    """The resource was deleted (HTTP 410)."""


class PreconditionFailed(_kind(412, "conflict")):  # type: ignore[misc]
    """Stale If-Match or an ambiguous conditional interaction (HTTP 412)."""


class PayloadTooLarge(_kind(413, "too-costly")):  # type: ignore[misc]
    """Body over the size limit (HTTP 413)."""


class UriTooLong(_kind(414, "too-long")):  # type: ignore[misc]
    """A query string over the limit; POST [type]/_search takes long queries (HTTP 414)."""


class UnsupportedMediaType(_kind(415, "not-supported")):  # type: ignore[misc]
    """Content-Type the server does not read (HTTP 415)."""


class Unprocessable(_kind(422, "processing")):  # type: ignore[misc]
    """Well-formed but fails a profile or business rule (HTTP 422)."""


# Seconds a client is told to wait after a 503 that names no other figure.
RETRY_AFTER_S = "5"


class ServiceUnavailable(_kind(503, "transient")):  # type: ignore[misc]
    """The database is unreachable or a query ran past its time budget (HTTP 503).

    Always with `Retry-After` (RFC 9110 section 10.2.3): every 503 here is temporary."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.headers.setdefault("Retry-After", RETRY_AFTER_S)


class TooCostly(_kind(503, "too-costly")):  # type: ignore[misc]
    """A query too expensive to answer (HTTP 503)."""
