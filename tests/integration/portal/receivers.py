"""Real receivers for notification tests: an HTTP endpoint (rest-hook) and an SMTP server
(aiosmtpd), each on a free loopback port in a thread of the test process."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

from fhir_server.db.embedded import free_port


class Hook:
    """A rest-hook endpoint recording each POSTed notification Bundle. `stop()` closes the
    port (connections refused: a dead endpoint); `start()` opens it again on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.received: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> Hook:
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hook.raw.append(body)
                hook.headers.append({k.lower(): v for k, v in self.headers.items()})
                hook.received.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [b for b in self.received if notification_type(b) == kind]


def status_of(bundle: dict[str, Any]) -> dict[str, Any]:
    return {p["name"]: p for p in bundle["entry"][0]["resource"]["parameter"]}


def notification_type(bundle: dict[str, Any]) -> str:
    return str(status_of(bundle)["type"]["valueCode"])


class Mailbox:
    """A real SMTP server (aiosmtpd) keeping every message it is handed."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"smtp://127.0.0.1:{self.port}"
        self.messages: list[tuple[list[str], Message]] = []
        box = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
                box.messages.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
                return "250 OK"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def start(self) -> Mailbox:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def to(self, address: str) -> list[Message]:
        return [m for rcpts, m in self.messages if address in rcpts]


async def until(check: Callable[[], Any], timeout_s: float = 20.0, what: str = "") -> Any:
    """Wait for `check()` to be truthy (deliveries are asynchronous by design)."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.05)
