"""The app's own CPU per request: the ASGI app called in-process, no HTTP server, no socket.

    python -m bench.asgi [--n 2000] [--rounds 5]

Starts a database (SecantusDB in memory, or MONGODB_URI), opens the real app
(`create_app`, its lifespan, tokens off) and calls it as uvicorn would, with a prepared
ASGI scope, for `GET /fhir/metadata` and `GET /fhir/Patient/<id>`; reports this process's
CPU time per request (user + system: middlewares, routing, the pipeline, rendering, the
driver's side of the read; the database's own CPU is another process's), the median of
rounds. CPU time barely depends on what else the machine runs, unlike rates. Then uvicorn's
access-log line alone: its logger and formatter writing to a file, per request.
Run from outside the checkout with `PYTHONPATH=DIR` to measure another version.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.crud import benchmark_database, patient


def scope(path: str, method: str = "GET", body: bytes = b"") -> dict[str, Any]:
    headers = [(b"host", b"127.0.0.1:8080"), (b"accept", b"*/*"), (b"user-agent", b"bench")]
    if body:
        headers += [(b"content-type", b"application/fhir+json")]
        headers += [(b"content-length", str(len(body)).encode())]
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
        "state": {},
    }


async def call(app: Any, sc: dict[str, Any], body: bytes = b"") -> tuple[int, bytes]:
    sent = False
    status = 0
    out: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            out.append(message.get("body", b""))

    await app(dict(sc), receive, send)
    return status, b"".join(out)


async def bench(args: argparse.Namespace, uri: str) -> None:
    from fhir_server.app import create_app
    from fhir_server.config import Settings

    settings = Settings(mongodb_uri=uri, database=f"bench_{uuid.uuid4().hex[:8]}", auto_seed=False)
    settings = type(settings)(**{**settings.__dict__, "auth_required": False})
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        await app.state.ready
        import orjson

        status, body = await call(
            app, scope("/fhir/Patient", "POST", orjson.dumps(patient(1))), orjson.dumps(patient(1))
        )
        assert status == 201, body
        pid = orjson.loads(body)["id"]
        paths = {"metadata": scope("/fhir/metadata"), "read": scope(f"/fhir/Patient/{pid}")}
        cpu: dict[str, list[float]] = {k: [] for k in paths}
        for sc in paths.values():  # warm up
            for _ in range(50):
                assert (await call(app, sc))[0] == 200
        for _ in range(args.rounds):
            for kind, sc in paths.items():
                c0 = time.process_time()
                for _ in range(args.n):
                    await call(app, sc)
                cpu[kind].append((time.process_time() - c0) / args.n)
        await app.state.ctx.store.client.drop_database(settings.database)
    for kind, values in cpu.items():
        print(f"{kind:<10}{statistics.median(values) * 1e6:>8.0f} us CPU per request")
    print(f"{'access log':<10}{access_log_cost(args.n) * 1e6:>8.0f} us CPU per line (ACCESS_LOG=1)")


def access_log_cost(n: int) -> float:
    """uvicorn's access line as `fhir-server serve` logs it (its default formatter, to a
    file, as a server's redirected stdout is)."""
    from uvicorn.logging import AccessFormatter

    with tempfile.TemporaryDirectory() as tmp:
        handler = logging.FileHandler(Path(tmp) / "access.log")
        handler.setFormatter(
            AccessFormatter('%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s')
        )
        log = logging.getLogger("bench.uvicorn.access")
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
        c0 = time.process_time()
        for _ in range(n):
            log.info(
                '%s - "%s %s HTTP/%s" %d',
                "127.0.0.1:50000",
                "GET",
                "/fhir/Patient/0b4c8e7e-3f0e-4a51-9d7e-4c6f1b1c9e2a",
                "1.1",
                200,
            )
        spent = (time.process_time() - c0) / n
        log.removeHandler(handler)
        handler.close()
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, benchmark_database(Path(tmp)) as (uri, _):
        asyncio.run(bench(args, uri))


if __name__ == "__main__":
    main()
