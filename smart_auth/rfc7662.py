"""Token introspection (RFC 7662).

A client may introspect the tokens issued to it (section 4: the server decides who may
ask about which token); anything else, and any expired, revoked or unknown token, is
``{"active": false}``. Active answers carry section 2.2's fields plus SMART's launch
context (SMART App Launch 2.2, "Token Introspection").
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

from authlib.oauth2.rfc7662 import IntrospectionEndpoint as _Introspection

from smart_auth.models import GrantSubject
from smart_auth.records import TokenRef, find_token


class IntrospectionEndpoint(_Introspection):  # type: ignore[misc]
    CLIENT_AUTH_METHODS = ["none", "client_secret_basic", "private_key_jwt"]

    def query_token(self, token_string: str, token_type_hint: str | None) -> TokenRef | None:
        return find_token(self.server.smart, token_string, token_type_hint)

    def check_permission(self, token: TokenRef, client: Any, request: Any) -> bool:
        return token.check_client(client)

    def introspect_token(self, token: TokenRef) -> dict[str, Any]:
        config = self.server.smart.config
        out: dict[str, Any] = {
            "active": True,
            "scope": token.scope,
            "client_id": token.client_id,
            "token_type": "Bearer" if token.kind == "access_token" else "refresh_token",
            "exp": int(token.expires_at.replace(tzinfo=token.expires_at.tzinfo or UTC).timestamp()),
            "iss": config.issuer,
            "aud": config.base_url,
        }
        if "iat" in token.claims:
            out["iat"] = token.claims["iat"]
        if token.subject:
            subject = GrantSubject.from_doc(token.subject)
            out["sub"] = subject.username
            out["fhirUser"] = config.base_url + "/" + subject.fhir_user
            out["acr"] = subject.level
            if subject.patient:
                out["patient"] = subject.patient
            if subject.encounter:
                out["encounter"] = subject.encounter
        else:
            out["sub"] = token.client_id
        return out
