"""Token revocation (RFC 7009).

Revoking a refresh token revokes its whole grant, access tokens included (section 2.1:
"the authorization server SHOULD also invalidate all access tokens based on the same
authorization grant"); revoking an access token revokes that token. Unknown or already
invalid tokens answer 200 (section 2.2). Clients authenticate as at the token endpoint.
Both go through the store's revocation methods, so every process's token cache drops the
token within a second (smart_auth/revocations.py).
"""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc7009 import RevocationEndpoint as _Revocation

from smart_auth.records import TokenRef, find_token


class RevocationEndpoint(_Revocation):  # type: ignore[misc]
    CLIENT_AUTH_METHODS = ["none", "client_secret_basic", "private_key_jwt"]

    def query_token(self, token_string: str, token_type_hint: str | None) -> TokenRef | None:
        return find_token(self.server.smart, token_string, token_type_hint)

    def revoke_token(self, token: TokenRef, request: Any) -> None:
        store = self.server.smart.store
        if token.kind == "refresh_token":
            store.revoke_grant(token.grant_id, "refresh token revoked by the client")
        else:
            store.revoke_token(token.key, "access token revoked by the client")
