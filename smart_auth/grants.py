"""authlib grants backed by MongoDB: authorization code, refresh token, client credentials.

- Authorization code (RFC 6749 section 4.1; SMART App Launch 2.2 "Obtain authorization
  code"): codes are random, stored hashed, live ``code_lifetime_s`` and are claimed
  atomically, so only one request anywhere can use a code. A second use is refused and
  revokes what the first one issued (RFC 6749 section 4.1.2). ``aud`` must be the FHIR base
  URL, ``state`` is required and an EHR ``launch`` must resolve.
- Refresh token (RFC 6749 section 6; OAuth 2.0 Security BCP, RFC 9700 section 4.14.2):
  every use rotates the token; the old one is claimed atomically and bound to its client;
  presenting a rotated token again revokes the whole grant.
- Client credentials (SMART Backend Services): ``private_key_jwt`` only, ``system/``
  scopes only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from authlib.oauth2.rfc6749 import (
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    grants,
)

from smart_auth import scopes as sc
from smart_auth.models import GrantSubject
from smart_auth.store import aware, digest, later, now

if TYPE_CHECKING:
    from smart_auth.server import AuthServer

TOKEN_AUTH_METHODS = ["none", "client_secret_basic", "private_key_jwt"]


@dataclass
class CodeRecord:
    """A claimed authorization code (authlib's AuthorizationCodeMixin)."""

    client_id: str
    redirect_uri: str
    scope: str
    subject: GrantSubject
    code_challenge: str | None
    code_challenge_method: str | None

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.subject.nonce

    def get_auth_time(self) -> int:
        return self.subject.auth_time


@dataclass
class RefreshRecord:
    """A claimed refresh token (authlib's TokenMixin, the parts the grant uses)."""

    client_id: str
    scope: str
    subject: GrantSubject

    def check_client(self, client: Any) -> bool:
        return bool(client.get_client_id() == self.client_id)

    def get_scope(self) -> str:
        return self.scope


def _auth(grant: Any) -> AuthServer:
    return grant.server.smart  # type: ignore[no-any-return]


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = TOKEN_AUTH_METHODS
    AUTHORIZATION_CODE_LENGTH = 43

    def validate_authorization_request(self) -> str:
        """RFC 6749 section 4.1.1 plus SMART 2.2's ``aud``, ``state`` and ``launch``."""
        redirect_uri: str = super().validate_authorization_request()
        data = self.request.payload.data
        try:
            if not data.get("state"):
                raise InvalidRequestError("SMART requires 'state'.")
            if _auth(self).config.base_url.rstrip("/") != str(data.get("aud", "")).rstrip("/"):
                raise InvalidRequestError("'aud' must be this server's FHIR base URL.")
            scope_words = sc.split(data.get("scope"))
            launch = data.get("launch")
            wants_launch = bool(launch) or "launch" in scope_words
            if wants_launch and (not launch or _auth(self).launches.find(launch) is None):
                raise InvalidRequestError("Unknown or expired 'launch'.")
        except InvalidRequestError as error:
            error.redirect_uri = redirect_uri
            error.state = data.get("state")
            raise
        return redirect_uri

    def save_authorization_code(self, code: str, request: Any) -> None:
        subject: GrantSubject = request.user
        data = request.payload.data
        _auth(self).store.codes.insert_one(
            {
                "_id": digest(code),
                "client_id": request.client.get_client_id(),
                "redirect_uri": data.get("redirect_uri"),
                "scope": request.granted_scope if request.granted_scope is not None else "",
                "subject": subject.to_doc(),
                "code_challenge": data.get("code_challenge"),
                "code_challenge_method": data.get("code_challenge_method"),
                "grant_id": subject.grant_id,
                "used": False,
                "expires_at": later(_auth(self).config.code_lifetime_s),
            }
        )

    def query_authorization_code(self, code: str, client: Any) -> CodeRecord | None:
        store = _auth(self).store
        key = digest(code)
        doc = store.codes.find_one_and_update(
            {"_id": key, "used": False}, {"$set": {"used": True, "used_at": now()}}
        )
        if doc is None:
            replayed = store.codes.find_one({"_id": key})
            if replayed is not None and replayed.get("used"):
                store.revoke_grant(replayed["grant_id"], "authorization code reused")
            return None
        if doc["client_id"] != client.get_client_id() or aware(doc["expires_at"]) <= now():
            return None
        return CodeRecord(
            client_id=doc["client_id"],
            redirect_uri=doc["redirect_uri"],
            scope=doc["scope"],
            subject=GrantSubject.from_doc(doc["subject"]),
            code_challenge=doc.get("code_challenge"),
            code_challenge_method=doc.get("code_challenge_method"),
        )

    def delete_authorization_code(self, authorization_code: CodeRecord) -> None:
        # Already claimed (used=True) in query_authorization_code; the TTL index removes it.
        return None

    def authenticate_user(self, authorization_code: CodeRecord) -> GrantSubject:
        return authorization_code.subject


class RefreshTokenGrant(grants.RefreshTokenGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = TOKEN_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> RefreshRecord | None:
        """Claim the token (rotate it) only once the request is known to be good: a
        refresh asking for a scope outside the grant is refused with the token still
        active (RFC 6749 section 6: the scope "MUST NOT include any scope not originally
        granted"), so a client's mistake does not cost it the grant."""
        store = _auth(self).store
        client_id = self.request.client.get_client_id()
        key = digest(refresh_token)
        doc = store.refresh.find_one({"_id": key, "client_id": client_id, "status": "active"})
        if doc is None:
            self._replayed(key, client_id)
            return None
        if aware(doc["expires_at"]) <= now():
            return None
        requested = self.request.payload.scope
        if requested and not set(sc.split(requested)) <= set(sc.split(doc["scope"])):
            raise InvalidScopeError()
        claimed = store.refresh.find_one_and_update(
            {"_id": key, "client_id": client_id, "status": "active"},
            {"$set": {"status": "rotated", "rotated_at": now()}},
        )
        if claimed is None:  # used by a concurrent request in between: a copy exists
            self._replayed(key, client_id)
            return None
        return RefreshRecord(doc["client_id"], doc["scope"], GrantSubject.from_doc(doc["subject"]))

    def _replayed(self, key: str, client_id: str) -> None:
        store = _auth(self).store
        old = store.refresh.find_one({"_id": key})
        if old is not None and old["client_id"] == client_id:
            # A rotated token used again: someone holds a copy. Revoke the grant.
            store.revoke_grant(old["grant_id"], "refresh token replayed")

    def authenticate_user(self, refresh_token: RefreshRecord) -> GrantSubject:
        return refresh_token.subject

    def revoke_old_credential(self, refresh_token: RefreshRecord) -> None:
        # Rotated when claimed (status="rotated"); kept to detect replays.
        return None


class ClientCredentialsGrant(grants.ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["private_key_jwt"]

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        """SMART Backend Services, "Issue access token": only ``system/`` scopes."""
        requested = self.request.payload.scope
        if not requested:
            raise InvalidScopeError("SMART Backend Services requires 'scope'.")
        allowed = self.request.client.get_allowed_scope(requested)
        system = [s for s in sc.split(allowed) if s.startswith("system/")]
        if not system:
            raise InvalidScopeError("None of the requested system scopes is allowed.")
        if not self.request.client.get_client_id():
            raise InvalidGrantError()
        token = self.generate_token(scope=" ".join(system), include_refresh_token=False)
        self.save_token(token)
        return 200, token, self.TOKEN_RESPONSE_HEADER
