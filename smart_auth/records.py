"""Finding an issued token from its string, for revocation (RFC 7009) and introspection
(RFC 7662): refresh tokens by their hash, access tokens by the ``jti`` of a valid JWT."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from smart_auth.rfc6750 import InvalidToken
from smart_auth.rfc9068 import decode_claims
from smart_auth.store import aware, digest, now

if TYPE_CHECKING:
    from smart_auth.server import AuthServer


@dataclass
class TokenRef:
    kind: str  # access_token | refresh_token
    key: str  # jti, or the refresh token's hash
    client_id: str
    grant_id: str
    scope: str
    expires_at: datetime
    revoked: bool
    subject: dict[str, Any] | None
    claims: dict[str, Any]

    def check_client(self, client: Any) -> bool:
        return bool(client.get_client_id() == self.client_id)

    def is_expired(self) -> bool:
        return aware(self.expires_at) <= now()

    def is_revoked(self) -> bool:
        return self.revoked


def find_token(server: AuthServer, token: str, hint: str | None) -> TokenRef | None:
    order = ["refresh_token", "access_token"]
    if hint == "access_token":
        order.reverse()
    for kind in order:
        found = _refresh(server, token) if kind == "refresh_token" else _access(server, token)
        if found is not None:
            return found
    return None


def _refresh(server: AuthServer, token: str) -> TokenRef | None:
    doc = server.store.refresh.find_one({"_id": digest(token)})
    if doc is None:
        return None
    return TokenRef(
        "refresh_token",
        doc["_id"],
        doc["client_id"],
        doc["grant_id"],
        doc["scope"],
        doc["expires_at"],
        doc.get("status") != "active",
        doc.get("subject"),
        {},
    )


def _access(server: AuthServer, token: str) -> TokenRef | None:
    if token.count(".") != 2:
        return None
    try:
        claims = decode_claims(server.keys, server.config, token)
    except InvalidToken:
        return None
    doc = server.store.tokens.find_one({"_id": claims["jti"]})
    if doc is None:
        return None
    return TokenRef(
        "access_token",
        doc["_id"],
        doc["client_id"],
        doc["grant_id"],
        doc["scope"],
        doc["expires_at"],
        bool(doc.get("revoked")),
        doc.get("subject"),
        claims,
    )
