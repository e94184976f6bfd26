"""JWT access tokens (RFC 9068) and their validation by the FHIR server.

Issued tokens are signed RS256 with the current key, header ``typ: at+jwt`` (section 2.1),
claims ``iss sub aud exp iat jti client_id scope`` (section 2.2) plus SMART's ``patient``,
``fhirUser`` and the login level as ``acr`` (section 2.2.1). ``aud`` is the FHIR base URL.

Validation (section 4) pins the algorithm to RS256, so ``alg: none`` and an HS256 token
"signed" with the public key both fail; it checks ``typ``, issuer, audience and expiry,
then looks the ``jti`` up in MongoDB: a token revoked (alone or with its grant) is refused.
The FHIR server keeps what this check returns in a per-process cache
(``smart_auth.token_cache``) that the revocation feed empties in every process within a
second (``smart_auth.revocations``).
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import JoseError

from smart_auth.config import AuthConfig
from smart_auth.keys import ALG, SigningKeys
from smart_auth.models import AuthContext, GrantSubject
from smart_auth.rfc6750 import InvalidToken
from smart_auth.scopes import parse_scopes
from smart_auth.store import AuthStore, aware, now

LEEWAY_S = 30
TYP = "at+jwt"


def issue_access_token(
    keys: SigningKeys,
    store: AuthStore,
    config: AuthConfig,
    *,
    client_id: str,
    scope: str,
    grant_id: str,
    subject: GrantSubject | None,
    lifetime_s: int,
) -> str:
    """Sign a JWT access token and record its ``jti`` (for revocation and introspection)."""
    issued = int(time.time())
    jti = secrets.token_urlsafe(24)
    claims: dict[str, Any] = {
        "iss": config.issuer,
        "sub": subject.fhir_user if subject else client_id,
        "aud": config.base_url,
        "exp": issued + lifetime_s,
        "iat": issued,
        "jti": jti,
        "client_id": client_id,
        "scope": scope,
    }
    if subject is not None:
        claims["fhirUser"] = config.base_url + "/" + subject.fhir_user
        claims["acr"] = subject.level
        claims["auth_time"] = subject.auth_time
        if subject.patient:
            claims["patient"] = subject.patient
        if subject.encounter:
            claims["encounter"] = subject.encounter
    key = keys.current
    token = jwt.encode({"alg": ALG, "kid": key.kid, "typ": TYP}, claims, key, algorithms=[ALG])
    store.tokens.insert_one(
        {
            "_id": jti,
            "grant_id": grant_id,
            "client_id": client_id,
            "scope": scope,
            "expires_at": datetime.fromtimestamp(claims["exp"], UTC),
            "revoked": False,
            "subject": subject.to_doc() if subject else None,
        }
    )
    return token


def decode_claims(keys: SigningKeys, config: AuthConfig, token: str) -> dict[str, Any]:
    """Verify signature (RS256 only), ``typ``, ``iss``, ``aud``, ``exp``; raise InvalidToken."""
    realm = config.base_url
    try:
        compact = jws.extract_compact(token.encode("ascii"))
        header = compact.headers()
    except (JoseError, UnicodeEncodeError, ValueError):
        raise InvalidToken.build(realm, "malformed access token") from None
    if header.get("alg") != ALG or header.get("typ") not in (TYP, "application/at+jwt"):
        raise InvalidToken.build(realm, "access token algorithm or type not accepted")
    try:
        decoded = jwt.decode(token, keys.verification_set(header.get("kid")), algorithms=[ALG])
    except (JoseError, ValueError):
        raise InvalidToken.build(realm, "access token signature not valid") from None
    claims = decoded.claims
    aud = claims.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    exp = claims.get("exp")
    if claims.get("iss") != config.issuer or config.base_url not in audiences:
        raise InvalidToken.build(realm, "access token issued for another server")
    if not isinstance(exp, int) or exp + LEEWAY_S < time.time():
        raise InvalidToken.build(realm, "access token expired")
    if not isinstance(claims.get("jti"), str) or not isinstance(claims.get("client_id"), str):
        raise InvalidToken.build(realm, "access token lacks required claims")
    return claims


def verify(keys: SigningKeys, store: AuthStore, config: AuthConfig, token: str) -> AuthContext:
    """The whole check, synchronous (it reads MongoDB): run it in a worker thread."""
    return verified(keys, store, config, token)[0]


def verified(
    keys: SigningKeys, store: AuthStore, config: AuthConfig, token: str
) -> tuple[AuthContext, str | None]:
    """:func:`verify`, with the account behind a user token (what a lockout revokes)."""
    claims = decode_claims(keys, config, token)
    record = store.tokens.find_one({"_id": claims["jti"]})
    if record is None or record.get("revoked") or aware(record["expires_at"]) <= now():
        raise InvalidToken.build(config.base_url, "access token revoked or unknown")
    subject = GrantSubject.from_doc(record["subject"]) if record.get("subject") else None
    scope = str(claims.get("scope", ""))
    context = AuthContext(
        subject=str(claims["sub"]),
        client_id=claims["client_id"],
        scopes=parse_scopes(scope),
        scope=scope,
        token_id=claims["jti"],
        grant_id=record["grant_id"],
        expires_at=datetime.fromtimestamp(claims["exp"], UTC),
        fhir_user=subject.fhir_user if subject else None,
        patient=subject.patient if subject else None,
        encounter=subject.encounter if subject else None,
        acr=subject.level if subject else None,
        acts_for=subject.acts_for if subject else (),
    )
    return context, subject.username if subject else None
