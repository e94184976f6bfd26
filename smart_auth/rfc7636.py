"""PKCE (RFC 7636), as SMART App Launch 2.2 requires it: S256 only, for every client.

SMART 2.2, "Authorization code flow with PKCE": "the app SHALL use S256 ... the server
SHALL NOT support plain". So, unlike authlib's default extension, a request with no
``code_challenge``, with ``code_challenge_method`` other than ``S256`` (or none), or a token
request without a valid ``code_verifier`` is refused, whatever the client type.
"""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749 import InvalidGrantError, InvalidRequestError
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7636.challenge import (
    CODE_CHALLENGE_PATTERN,
    CODE_VERIFIER_PATTERN,
    create_s256_code_challenge,
)


class S256CodeChallenge(CodeChallenge):  # type: ignore[misc]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    CODE_CHALLENGE_METHODS = {"S256": CodeChallenge.CODE_CHALLENGE_METHODS["S256"]}

    def __init__(self) -> None:
        super().__init__(required=True)

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        """RFC 7636 section 4.3 / 4.4.1, tightened: both parameters, once, S256."""
        datalist = grant.request.payload.datalist
        challenge = grant.request.payload.data.get("code_challenge")
        method = grant.request.payload.data.get("code_challenge_method")
        if len(datalist.get("code_challenge", [])) > 1:
            raise InvalidRequestError("Multiple 'code_challenge' in request.")
        if len(datalist.get("code_challenge_method", [])) > 1:
            raise InvalidRequestError("Multiple 'code_challenge_method' in request.")
        if not challenge:
            raise InvalidRequestError("PKCE is required: missing 'code_challenge'.")
        if method != "S256":
            raise InvalidRequestError("'code_challenge_method' must be S256.")
        if not CODE_CHALLENGE_PATTERN.match(challenge):
            raise InvalidRequestError("Invalid 'code_challenge'.")

    def validate_code_verifier(self, grant: Any, result: Any) -> None:
        """RFC 7636 section 4.6: BASE64URL(SHA256(verifier)) must equal the challenge."""
        verifier = grant.request.form.get("code_verifier")
        code = grant.request.authorization_code
        if not verifier:
            raise InvalidRequestError("Missing 'code_verifier'.")
        if not CODE_VERIFIER_PATTERN.match(verifier):
            raise InvalidRequestError("Invalid 'code_verifier'.")
        challenge = self.get_authorization_code_challenge(code)
        if not challenge or code.code_challenge_method != "S256":
            raise InvalidGrantError("The code was issued without an S256 challenge.")
        if create_s256_code_challenge(verifier) != challenge:
            raise InvalidGrantError("Code verifier does not match the challenge.")
