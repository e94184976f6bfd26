"""``private_key_jwt`` client authentication (RFC 7523 section 2.2, OIDC Core section 9),
as profiled by SMART App Launch 2.2, "Client Authentication: Asymmetric (public key)".

The assertion must: be signed RS384 or ES384 (SMART requires servers to support both)
with a key of the client's registered JWK Set (inline, or fetched from its ``jwks_uri``),
named by ``kid``; have ``iss`` = ``sub`` = the client id; name the token endpoint in ``aud``;
expire no more than five minutes ahead; and carry a ``jti`` never seen before (kept in
MongoDB until the assertion expires, so a replay is refused by every server process).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from authlib.oauth2.rfc6749 import InvalidClientError
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from pymongo.errors import DuplicateKeyError

from smart_auth.clients import SmartClient
from smart_auth.config import AuthConfig
from smart_auth.store import AuthStore

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ALGORITHMS = ("RS384", "ES384")
CLOCK_SKEW_S = 30
JWKS_CACHE_S = 300

JwksFetcher = Callable[[str], dict[str, Any]]


def fetch_jwks(url: str) -> dict[str, Any]:
    """GET a client's JWK Set (SMART 2.2: the server SHALL fetch it over TLS)."""
    response = httpx.get(url, timeout=5.0, follow_redirects=False)
    response.raise_for_status()
    data = response.json()
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError("not a JWK Set")
    return data


def _fail(description: str) -> InvalidClientError:
    return InvalidClientError(status_code=401, description=description)


class PrivateKeyJWT:
    """An authlib client-auth method: ``(query_client, request) -> client | None``."""

    def __init__(
        self, store: AuthStore, config: AuthConfig, fetcher: JwksFetcher | None = None
    ) -> None:
        self.store = store
        self.config = config
        self.fetcher = fetcher or fetch_jwks
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def __call__(self, query_client: Callable[[str], Any], request: Any) -> SmartClient | None:
        form = request.form
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            return None
        assertion = form.get("client_assertion")
        if not assertion:
            raise _fail("missing client_assertion")
        header, unverified = self._peek(assertion)
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ALGORITHMS:
            raise _fail(f"client assertion must be signed with one of {', '.join(ALGORITHMS)}")
        client_id = unverified.get("iss")
        if not isinstance(client_id, str) or unverified.get("sub") != client_id:
            raise _fail("client assertion iss and sub must both be the client id")
        form_client = form.get("client_id")
        if form_client and form_client != client_id:
            raise _fail("client_id does not match the assertion")
        client: SmartClient | None = query_client(client_id)
        if client is None or client.auth_method != "private_key_jwt":
            raise _fail("unknown client or client not registered for private_key_jwt")
        claims = self._verify(client, assertion, alg, kid)
        self._check_claims(claims)
        self._remember_jti(client_id, claims)
        return client

    @staticmethod
    def _peek(assertion: str) -> tuple[dict[str, Any], dict[str, Any]]:
        try:
            compact = jws.extract_compact(assertion.encode("ascii"))
            claims = json.loads(compact.payload)
        except (JoseError, ValueError, UnicodeEncodeError):
            raise _fail("malformed client assertion") from None
        if not isinstance(claims, dict):
            raise _fail("malformed client assertion")
        return compact.headers(), claims

    def _keys(self, client: SmartClient, refresh: bool) -> dict[str, Any]:
        if client.jwks is not None:
            return client.jwks
        if not client.jwks_uri:
            raise _fail("client has no registered keys")
        url = client.jwks_uri
        with self._lock:
            hit = self._cache.get(url)
            if hit and not refresh and time.monotonic() - hit[0] < JWKS_CACHE_S:
                return hit[1]
        try:
            data = self.fetcher(url)
        except (httpx.HTTPError, ValueError):
            raise _fail("could not fetch the client's JWK Set") from None
        with self._lock:
            self._cache[url] = (time.monotonic(), data)
        return data

    def _verify(self, client: SmartClient, assertion: str, alg: str, kid: Any) -> dict[str, Any]:
        for refresh in (False, True):
            jwks = self._keys(client, refresh)
            candidates = [k for k in jwks.get("keys", []) if kid is None or k.get("kid") == kid]
            if candidates or client.jwks is not None:
                break
        if not candidates:
            raise _fail("no registered key matches the assertion's kid")
        try:
            keyset = KeySet.import_key_set({"keys": candidates})
            return dict(jwt.decode(assertion, keyset, algorithms=[alg]).claims)
        except (JoseError, ValueError):
            raise _fail("client assertion signature not valid") from None

    def _check_claims(self, claims: dict[str, Any]) -> None:
        aud = claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        if self.config.token_endpoint not in audiences:
            raise _fail("client assertion aud must be the token endpoint")
        exp, now = claims.get("exp"), time.time()
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise _fail("client assertion lacks exp")
        if exp + CLOCK_SKEW_S < now:
            raise _fail("client assertion expired")
        if exp > now + self.config.assertion_max_lifetime_s + CLOCK_SKEW_S:
            raise _fail("client assertion exp is more than five minutes ahead")
        nbf = claims.get("nbf")
        if isinstance(nbf, int | float) and nbf - CLOCK_SKEW_S > now:
            raise _fail("client assertion not yet valid")
        if not isinstance(claims.get("jti"), str) or not claims["jti"]:
            raise _fail("client assertion lacks jti")

    def _remember_jti(self, client_id: str, claims: dict[str, Any]) -> None:
        expires = datetime.fromtimestamp(float(claims["exp"]) + CLOCK_SKEW_S, UTC)
        try:
            self.store.jti.insert_one(
                {"_id": f"{client_id}|{claims['jti']}", "expires_at": expires}
            )
        except DuplicateKeyError:
            raise _fail("client assertion jti was already used") from None
