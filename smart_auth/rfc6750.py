"""Bearer-token errors for the FHIR endpoints (RFC 6750 section 3).

Without any token the challenge carries no error code (section 3.1: "If the request lacks
any authentication information ... the resource server SHOULD NOT include an error code");
with a bad one it carries ``error="invalid_token"``.
"""

from __future__ import annotations

from fhir_server.errors import Unauthorized


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def www_authenticate(
    realm: str,
    error: str | None = "invalid_token",
    description: str | None = None,
    scope: str | None = None,
) -> str:
    """The ``WWW-Authenticate`` value, e.g. ``Bearer realm="...", error="invalid_token"``."""
    parts = [f'realm="{_quote(realm)}"']
    if error:
        parts.append(f'error="{_quote(error)}"')
    if description:
        parts.append(f'error_description="{_quote(description)}"')
    if scope:
        parts.append(f'scope="{_quote(scope)}"')
    return "Bearer " + ", ".join(parts)


class InvalidToken(Unauthorized):
    """A missing, malformed, expired, revoked or foreign access token (HTTP 401).

    A :class:`fhir_server.errors.FhirError`, so the app's one handler renders it as an
    OperationOutcome (issue code ``login``) with the ``WWW-Authenticate`` header.
    """

    @classmethod
    def build(cls, realm: str, description: str, *, missing: bool = False) -> InvalidToken:
        header = www_authenticate(realm, None if missing else "invalid_token", description)
        return cls(description, headers={"WWW-Authenticate": header})
