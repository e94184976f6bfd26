"""OpenID Connect for SMART's ``openid fhirUser`` scopes.

ID tokens follow OpenID Connect Core 1.0 section 2 (``iss sub aud exp iat auth_time nonce
acr``), signed RS256 (section 15.1), plus SMART's ``fhirUser`` claim (SMART App Launch 2.2,
"Scopes for requesting identity data"). Discovery follows OpenID Connect Discovery 1.0
section 3.
"""

from __future__ import annotations

import time
from typing import Any

from joserfc import jwt

from smart_auth.config import AuthConfig
from smart_auth.keys import ALG, SigningKeys
from smart_auth.models import GrantSubject

ID_TOKEN_LIFETIME_S = 3600


def id_token(
    keys: SigningKeys, config: AuthConfig, subject: GrantSubject, client_id: str, scope: list[str]
) -> str:
    issued = int(time.time())
    claims: dict[str, Any] = {
        "iss": config.issuer,
        "sub": subject.username,
        "aud": client_id,
        "exp": issued + ID_TOKEN_LIFETIME_S,
        "iat": issued,
        "auth_time": subject.auth_time,
        "acr": subject.level,
    }
    if subject.nonce:
        claims["nonce"] = subject.nonce
    if "fhirUser" in scope:
        claims["fhirUser"] = config.base_url + "/" + subject.fhir_user
    key = keys.current
    return jwt.encode({"alg": ALG, "kid": key.kid, "typ": "JWT"}, claims, key, algorithms=[ALG])


def openid_configuration(
    config: AuthConfig, levels: list[str], scopes: list[str]
) -> dict[str, Any]:
    return {
        "issuer": config.issuer,
        "authorization_endpoint": config.url("/auth/authorize"),
        "token_endpoint": config.token_endpoint,
        "jwks_uri": config.url("/auth/jwks"),
        "introspection_endpoint": config.url("/auth/introspect"),
        "revocation_endpoint": config.url("/auth/revoke"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [ALG],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": scopes,
        "claims_supported": [
            "iss",
            "sub",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "nonce",
            "acr",
            "fhirUser",
        ],
        "acr_values_supported": levels,
        "request_parameter_supported": False,
        "claims_parameter_supported": False,
    }
