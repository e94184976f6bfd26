"""Load shedding: a bounded number of requests in flight, the rest refused at once.

An overloaded server that queues without bound stops answering anyone (every request waits
behind the ones before it, and the database behind them all); one that refuses what it cannot
take keeps answering the rest on time. So, as pure ASGI middleware in front of everything
(FHIR and the authorization server alike):

- at most `limit` HTTP requests are in flight; one more is answered at once with
  503 Service Unavailable, `Retry-After` and an OperationOutcome (issue `transient`), as
  RFC 9110 section 15.6.4 describes, without reading its body;
- while `saturated()` says a bounded backlog downstream is full (the audit sink's: nothing
  may be served that cannot be audited, docs/access.md "Audit"), every request is refused
  the same way.

`/fhir/metadata` is refused too: a load balancer that probes it should see the overload.
See docs/rest.md, "Load shedding".
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from fhir_server.errors import ServiceUnavailable

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

FHIR_JSON = b"application/fhir+json; charset=utf-8"


def _never() -> bool:
    return False


def overload_outcome(reason: str, retry_after_s: int) -> tuple[dict[str, str], bytes]:
    """The headers and body of a shed request (one place, so every refusal looks alike)."""
    err = ServiceUnavailable(reason, headers={"Retry-After": str(retry_after_s)})
    return err.headers, orjson.dumps(err.outcome())


class LoadShedding:
    """ASGI middleware bounding the requests in flight (see the module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limit: int,
        retry_after_s: int = 2,
        saturated: Callable[[], bool] = _never,
    ) -> None:
        if limit < 1:
            raise ValueError(f"the in-flight limit must be at least 1, not {limit}")
        self.app = app
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.saturated = saturated
        self.in_flight = 0
        self.shed = 0  # requests refused since start (for diagnosis and the soak figures)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)  # lifespan (and websockets: none here)
            return
        if self.in_flight >= self.limit:
            await self._refuse(send, f"the server is at its limit of {self.limit} requests")
            return
        if self.saturated():
            await self._refuse(send, "the audit log is behind; retry shortly")
            return
        # One event loop: the check above and this increment cannot interleave.
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _refuse(self, send: Send, reason: str) -> None:
        self.shed += 1
        headers, body = overload_outcome(reason, self.retry_after_s)
        raw = [(b"content-type", FHIR_JSON), (b"content-length", str(len(body)).encode())]
        raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": 503, "headers": raw})
        await send({"type": "http.response.body", "body": body})
