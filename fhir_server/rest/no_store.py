"""`Cache-Control: no-store` on every FHIR response that can carry health data.

Shared and browser caches must not keep a patient's record (HIPAA-style minimum
necessary; RFC 9111 section 5.2.2.5), whatever the status: an error's diagnostics can name
data too. The CapabilityStatement and the SMART discovery documents are public and stay
cacheable. Token responses set their own (RFC 6749 section 5.1).
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

FHIR_PREFIX = "/fhir"
PUBLIC_PATHS = frozenset({"/fhir/metadata"})
PUBLIC_PREFIXES = ("/fhir/.well-known/",)


def carries_health_data(path: str) -> bool:
    if path != FHIR_PREFIX and not path.startswith(FHIR_PREFIX + "/"):
        return False
    return path.rstrip("/") not in PUBLIC_PATHS and not path.startswith(PUBLIC_PREFIXES)


class NoStoreMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not carries_health_data(scope["path"]):
            await self.app(scope, receive, send)
            return

        async def send_no_store(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if "cache-control" not in headers:
                    headers["Cache-Control"] = "no-store"
                    headers["Pragma"] = "no-cache"  # HTTP/1.0 caches
            await send(message)

        await self.app(scope, receive, send_no_store)
