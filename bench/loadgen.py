"""A small HTTP/1.1 load generator: N keep-alive connections, one timing per request.

httpx costs about as much client CPU per request as the server's cheapest path does, so
on a 2-core machine it would measure the client. This speaks just enough HTTP/1.1 over
asyncio streams (a request line and headers out; status, `Content-Length` or chunked body
in) for GETs and POSTs to the server, at about 0.2 ms of client CPU per request on this
machine, and reports its own CPU so a reader can check it was not the bottleneck.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

CRLF = b"\r\n"


class Connection:
    """One keep-alive HTTP/1.1 connection (reopened when the server closes it)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.reader is None or self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self.reader, self.writer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
        try:
            return await self._exchange(head, body)
        except (ConnectionError, asyncio.IncompleteReadError):
            # A keep-alive connection the server closed while idle: once more on a new one.
            self.close()
            return await self._exchange(head, body)

    async def _exchange(self, head: bytes, body: bytes) -> tuple[int, bytes]:
        reader, writer = await self._open()
        writer.write(head + body)
        await writer.drain()
        raw = await reader.readuntil(CRLF + CRLF)
        lines = raw.split(CRLF)
        status = int(lines[0].split(b" ", 2)[1])
        length: int | None = None
        chunked = close = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                close = True
        if chunked:
            parts = []
            while True:
                size = int((await reader.readuntil(CRLF)).split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(CRLF)  # no trailers from our server
                    break
                parts.append(await reader.readexactly(size))
                await reader.readexactly(2)
            data = b"".join(parts)
        else:
            data = await reader.readexactly(length or 0)
        if close:
            self.close()
        return status, data


class Client:
    """`workers` connections to one server; `headers` go on every request."""

    def __init__(self, base_url: str, workers: int, headers: dict[str, str] | None = None) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.conns = [Connection(self.host, self.port) for _ in range(workers)]
        self.headers = dict(headers or {})

    def _head(self, method: str, target: str, extra: dict[str, str], length: int | None) -> bytes:
        lines = [f"{method} {self.prefix}{target} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in {**self.headers, **extra}.items()]
        if length is not None:
            lines.append(f"Content-Length: {length}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def get(self, worker: int, target: str, **extra: str) -> tuple[int, bytes]:
        """`target` is the path below the base URL with its query string."""
        return await self.conns[worker].request(self._head("GET", target, extra, None))

    async def post(self, worker: int, target: str, body: bytes, **extra: str) -> tuple[int, bytes]:
        head = self._head("POST", target, extra, len(body))
        return await self.conns[worker].request(head, body)

    def close(self) -> None:
        for c in self.conns:
            c.close()


@dataclass
class Round:
    """One round: per-request latencies (s), wall time, units done, errors, client CPU."""

    latencies: list[float] = field(default_factory=list)
    wall: float = 0.0
    units: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    client_cpu: float = 0.0  # this process's CPU seconds during the round

    @property
    def rate(self) -> float:
        return self.units / self.wall if self.wall else 0.0


# A job does request `i` on worker `w` and returns the units it did (requests, rows or
# resources) or raises; the round times each call.
Job = Callable[[int, int], Awaitable[int]]


class Failed(Exception):
    """A request that answered something other than success (its label is counted)."""


async def run_round(n: int, concurrency: int, job: Job) -> Round:
    """`n` jobs on `concurrency` workers, each waiting for its answer before the next."""
    out = Round()
    queue = iter(range(n))

    async def worker(w: int) -> None:
        for i in queue:
            t0 = time.perf_counter()
            try:
                units = await job(w, i)
            except Failed as e:
                out.errors[str(e)] += 1
                continue
            out.latencies.append(time.perf_counter() - t0)
            out.units += units

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    out.wall = time.perf_counter() - t0
    out.client_cpu = time.process_time() - cpu0
    return out
