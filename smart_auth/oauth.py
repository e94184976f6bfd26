"""The thin adapter between authlib's framework-free AuthorizationServer and our routes.

Routes read the HTTP request (async), build a :class:`SmartRequest`, and call the server
in a worker thread; the server answers an :class:`OAuthResponse` that routes render.
authlib's grant and endpoint classes implement RFC 6749, RFC 7636, RFC 7009 and RFC 7662;
:mod:`smart_auth.grants` plugs MongoDB into them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from authlib.oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import OAuth2Payload, OAuth2Request

Pairs = Sequence[tuple[str, str]]


class PairsPayload(OAuth2Payload):  # type: ignore[misc]
    """Request parameters from a query string or a form body (first value wins)."""

    def __init__(self, pairs: Pairs) -> None:
        self._datalist: defaultdict[str, list[str]] = defaultdict(list)
        for key, value in pairs:
            self._datalist[key].append(value)
        self._data = {k: v[0] for k, v in self._datalist.items()}

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return self._datalist


class SmartRequest(OAuth2Request):  # type: ignore[misc]
    """An OAuth 2.0 request as authlib expects it, built from already-read HTTP data.

    ``uri`` is the public URL (from the configured base URL, not the Host header), so
    authlib's transport check sees what the client saw behind a TLS-terminating proxy.
    """

    def __init__(
        self,
        method: str,
        uri: str,
        headers: Mapping[str, str],
        query: Pairs = (),
        form: Pairs = (),
    ) -> None:
        super().__init__(method, uri, headers=headers)
        self._args = PairsPayload(query)
        self._form = PairsPayload(form)
        self.payload = self._form if method == "POST" else self._args
        # Set by the consent step: the scope the user approved (after every ceiling).
        self.granted_scope: str | None = None

    @property
    def args(self) -> dict[str, str]:
        return self._args.data

    @property
    def form(self) -> dict[str, str]:
        return self._form.data


@dataclass
class OAuthResponse:
    status: int
    body: Any
    headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def location(self) -> str | None:
        return next((v for k, v in self.headers if k.lower() == "location"), None)


class SmartAuthorizationServerBase(AuthorizationServer):  # type: ignore[misc]
    """authlib's framework hooks: requests pass through, responses become OAuthResponse."""

    def create_oauth2_request(self, request: Any) -> SmartRequest:
        if not isinstance(request, SmartRequest):
            raise TypeError("routes must pass a SmartRequest")
        return request

    def create_json_request(self, request: Any) -> Any:
        raise NotImplementedError("no JSON endpoints")

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        return None

    def handle_response(self, status: int, body: Any, headers: Any) -> OAuthResponse:
        headers = list(headers or [])
        if isinstance(body, dict) and body.get("error") == "invalid_client":
            # RFC 6749 section 5.2 allows 401 for any failed client authentication; one
            # status for every cause tells an attacker nothing about which part failed.
            status = 401
            if not any(k.lower() == "www-authenticate" for k, _ in headers):
                headers.append(("WWW-Authenticate", 'Basic realm="token", error="invalid_client"'))
        return OAuthResponse(status, body, headers)
