"""bench/all.py's pure parts: the indexed reference filter, verdicts, the load generator's
HTTP parsing (on a loopback socket: the only I/O, no database)."""

from __future__ import annotations

import asyncio

from bench import loadgen
from bench.all import Row, Side, indexed


def test_indexed_turns_a_comparison_elem_match_into_a_plain_range() -> None:
    filt = {"rt": "Patient", "ix.s": {"$elemMatch": {"$gte": "family|a", "$lt": "family|a\uffff"}}}
    assert indexed(filt) == {"rt": "Patient", "ix.s": {"$gte": "family|a", "$lt": "family|a\uffff"}}
    # Already indexed, or an $elemMatch on sub-documents: unchanged.
    assert indexed({"ix.k": "x", "rt": "Patient"}) == {"ix.k": "x", "rt": "Patient"}
    sub = {"ix.o": {"$elemMatch": {"p": "date", "v": {"$gte": 1}}}}
    assert indexed(sub) == sub


def test_verdicts() -> None:
    def side(rate: float) -> Side:
        s = Side("x")
        s.add(loadgen.Round([0.01], 1.0, int(rate)))
        return s

    assert Row("r", "req/s", side(80), side(100), "raw", ">= 0.80").verdict() == "pass"
    assert Row("r", "req/s", side(79), side(100), "raw", ">= 0.80").verdict() == "FAIL"
    assert Row("g", "ms", None, None, "", "<= 1.50", ratio=1.6).verdict() == "FAIL"
    assert Row("n", "", None, None, "").verdict() == "n/a"


def test_load_generator_reads_sized_chunked_and_closing_answers() -> None:
    answers = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nnew",
    ]
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while answers:
            seen.append(await reader.readuntil(b"\r\n\r\n"))
            answer = answers.pop(0)
            writer.write(answer)
            await writer.drain()
            if b"close" in answer:
                break
        writer.close()

    async def main() -> list[tuple[int, bytes]]:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = loadgen.Client(f"http://127.0.0.1:{port}/fhir", 1, {"Authorization": "B x"})
        out = [await client.get(0, "/Patient/1") for _ in range(4)]
        client.close()
        server.close()
        return out

    out = asyncio.run(main())
    assert out == [(200, b"hello"), (404, b"abcde"), (200, b"ok"), (200, b"new")]
    assert seen[0].startswith(b"GET /fhir/Patient/1 HTTP/1.1\r\n")
    assert b"Authorization: B x\r\n" in seen[0]
