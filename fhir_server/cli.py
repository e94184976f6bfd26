"""The `fhir-server` console script: serve, load, seed, reindex, client(s), export, import.

Settings come from the environment (PORT, HOST, MONGODB_URI, DATA_DIR, ...), see
fhir_server/config.py. `load`, `seed` and `reindex` attach to the embedded database of a
running server (through its state file) or start it themselves.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fhir_server.config import Settings

# The longest request line and headers the HTTP parser buffers. h11, not httptools: the
# latter's parser refuses a URL over about 80 KB with a plain-text 400 and cannot be told
# otherwise, while up to this size the app answers a long query string with a 414
# OperationOutcome (fhir_server.rest.body.MAX_QUERY_BYTES). Beyond it: h11's plain 400.
MAX_REQUEST_HEAD_BYTES = 1024 * 1024


def uvicorn_config(settings: Settings, app: Any) -> Any:
    """The uvicorn configuration `serve` runs (the tests run the same one)."""
    import uvicorn

    from fhir_server.stopping import graceful_timeout

    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        # Never uvicorn's own line: the app writes one JSON line per request instead
        # (fhir_server/devx/request_log.py; ACCESS_LOG=0 turns it off).
        access_log=False,
        lifespan="on",
        http="h11",
        h11_max_incomplete_event_size=MAX_REQUEST_HEAD_BYTES,
        timeout_graceful_shutdown=graceful_timeout(settings.stop_timeout_s),
    )


def _serve(settings: Settings, _: argparse.Namespace) -> int:
    from fhir_server.app import create_app
    from fhir_server.stopping import BoundedStopServer

    app = create_app(settings)
    config = uvicorn_config(settings, app)

    def kill_embedded() -> None:
        embedded = getattr(app.state, "embedded", None)
        if embedded is not None:
            embedded.kill()

    server = BoundedStopServer(
        config, stop_timeout_s=settings.stop_timeout_s, last_resort=kill_embedded
    )
    server.run()
    return 0 if server.started else 3  # uvicorn's STARTUP_FAILURE, as uvicorn.run returns


@asynccontextmanager
async def _context(settings: Settings) -> AsyncIterator[Any]:
    from fhir_server.app import build_context
    from fhir_server.db.client import ensure_indexes, open_client
    from fhir_server.db.embedded import EmbeddedDatabase
    from fhir_server.search.indexes import index_models
    from fhir_server.storage.audit_store import prepare_separate

    embedded = None
    uri = settings.mongodb_uri
    if not uri:
        embedded = EmbeddedDatabase(settings.data_dir)
        uri = await asyncio.to_thread(embedded.start)
    client = open_client(uri, timeout_ms=10_000)
    try:
        ctx = build_context(settings, client[settings.database])
        await ensure_indexes(ctx.store.db, index_models())
        # The audit log's indexes; AuditEvents an older version kept in `resources` move.
        if moved := await prepare_separate(ctx.store):
            print(f"moved {moved} AuditEvents into the audit log", file=sys.stderr)
        yield ctx
    finally:
        await client.close()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


def _run(settings: Settings, job: Callable[[Any], Awaitable[int]]) -> int:
    async def main() -> int:
        async with _context(settings) as ctx:
            return await job(ctx)

    return asyncio.run(main())


def _load(settings: Settings, args: argparse.Namespace) -> int:
    from fhir_server.loader import load_paths

    async def job(ctx: Any) -> int:
        summary = await load_paths(ctx, [Path(p) for p in args.paths], progress=not args.quiet)
        print("\n".join(summary.lines()))
        return 1 if summary.failures else 0

    return _run(settings, job)


def _seed(settings: Settings, _: argparse.Namespace) -> int:
    from fhir_server.seeding import seed

    if settings.production:
        print("refusing to load development seed data in production mode", file=sys.stderr)
        return 2

    async def job(ctx: Any) -> int:
        report = await seed(ctx)
        print(
            f"seed: {report.created} created, {report.updated} updated, "
            f"{report.unchanged} unchanged, {len(report.failed)} failed"
        )
        for line in report.failed:
            print(f"  - {line}")
        return 1 if report.failed else 0

    return _run(settings, job)


def _reindex(settings: Settings, _: argparse.Namespace) -> int:
    from fhir_server.storage.reindex import reindex

    async def job(ctx: Any) -> int:
        n = await reindex(ctx.store)
        print(f"reindexed {n} resources")
        return 0

    return _run(settings, job)


def _client(settings: Settings, args: argparse.Namespace) -> int:
    """Disable or enable a registered SMART client. Disabling revokes every grant and token
    it holds, in every server process within a second (docs/smart.md, "Token cache")."""
    from fhir_server.db.embedded import EmbeddedDatabase
    from smart_auth.clients import disable_client, enable_client
    from smart_auth.store import AuthStore

    embedded = None
    uri = settings.mongodb_uri
    if not uri:
        embedded = EmbeddedDatabase(settings.data_dir)
        uri = embedded.start()  # attaches to a running server's database
    store = AuthStore(uri, settings.database)
    try:
        change = disable_client if args.action == "disable" else enable_client
        done = change(store, args.client_id)
    finally:
        store.close()
        if embedded is not None and embedded.owned:
            embedded.stop()
    if not done:
        print(f"no registered client {args.client_id!r}", file=sys.stderr)
        return 1
    print(f"client {args.client_id} {args.action}d")
    return 0


def _token(settings: Settings, args: argparse.Namespace) -> int:
    """Print an access token from the running server's authorization server (development
    only; fhir_server/devx/token.py)."""
    import json

    from fhir_server.devx.token import TokenError, issue

    try:
        token = issue(
            settings,
            args.login,
            args.scope,
            patient=args.patient,
            password=args.password,
            server=args.server,
        )
    except TokenError as exc:
        print(f"fhir-server token: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(token, indent=2))
    else:
        print(token["access_token"])
        about = f"scope: {token.get('scope', '')}"
        if token.get("patient"):
            about += f"; patient: {token['patient']}"
        print(about, file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fhir-server", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the FHIR server (PORT, HOST, MONGODB_URI, DATA_DIR)")
    p = sub.add_parser("load", help="load transaction/batch bundles and NDJSON files")
    p.add_argument("paths", nargs="+", help="files or folders (*.json bundles, *.ndjson)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    sub.add_parser("seed", help="load the development seed population")
    sub.add_parser("reindex", help="recompute search index entries of every resource")
    p = sub.add_parser("client", help="disable or enable a registered SMART client")
    p.add_argument("action", choices=["disable", "enable"])
    p.add_argument("client_id")
    p = sub.add_parser("token", help="print an access token for a seed login (development only)")
    p.add_argument("--login", required=True, help="a username of seed_data/logins.json")
    p.add_argument("--scope", default="openid fhirUser patient/*.rs", help="the scopes to ask")
    p.add_argument("--patient", help="the patient to open (an id the login may act for)")
    p.add_argument("--password", help="default: the seed login's password")
    p.add_argument("--server", help="the FHIR base URL (default: PUBLIC_BASE_URL or HOST:PORT)")
    p.add_argument("--json", action="store_true", help="print the whole token response")
    from fhir_server import bulk_cli, clients_cli

    clients_cli.add_parser(sub)
    bulk_cli.add_parsers(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # The command-line clients drive the server over HTTP: one line per request is noise.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings = Settings.from_env()
    handlers = {
        "serve": _serve,
        "load": _load,
        "seed": _seed,
        "reindex": _reindex,
        "client": _client,
        "token": _token,
        "clients": clients_cli.run,
        "export": bulk_cli.export,
        "import": bulk_cli.import_,
    }
    return handlers[args.command](settings, args)


if __name__ == "__main__":
    sys.exit(main())
