"""The `fhir-server token` subcommand: database wiring around fhir_server.devx.token.issue.

It opens the configured database (MONGODB_URI, or the embedded one of a running server
through its state file, as `load` and `client` do), starts an authorization server on it
with the FHIR server's login audit hook, so the login leaves the same AuditEvent as a
browser login, and prints the access token alone on stdout (`TOKEN=$(fhir-server token
...)`); what was granted goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import replace
from typing import Any

from fhir_server.config import Settings

PRODUCTION_REFUSAL = (
    "fhir-server token is a development tool and is refused in production (FHIR_ENV=production): "
    "get tokens through the authorization server's browser flow"
)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("token", help="print an access token for a login (development only)")
    p.add_argument("--login", required=True, help="the username, e.g. james.carter")
    p.add_argument("--scope", default="patient/*.rs", help='e.g. "patient/*.rs openid fhirUser"')
    p.add_argument("--patient", help="the patient id to open (default: the login's own record)")
    p.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from stdin (default: the seed login's password)",
    )
    p.add_argument("--json", action="store_true", help="print the whole token response")


def run(settings: Settings, args: argparse.Namespace) -> int:
    if settings.production:
        print(PRODUCTION_REFUSAL, file=sys.stderr)
        return 2
    from fhir_server.devx.token import TokenRefused, seed_password
    from smart_auth.config import SEED_DIR

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        found = seed_password(args.login, SEED_DIR / "logins.json")
        if found is None:
            print(f"{args.login} is not a seed login: pass --password-stdin", file=sys.stderr)
            return 1
        password = found
    try:
        issued = asyncio.run(_issue(settings, args.login, password, args.scope, args.patient))
    except TokenRefused as refused:
        print(f"refused: {refused}", file=sys.stderr)
        return 1
    body = issued.response
    if args.json:
        print(json.dumps(body, indent=2))
    else:
        print(body["access_token"])
    print(f"scope: {body.get('scope', '')}", file=sys.stderr)
    if body.get("patient"):
        print(f"patient: {body['patient']}", file=sys.stderr)
    if issued.withheld:
        print(f"withheld by the login level: {' '.join(issued.withheld)}", file=sys.stderr)
    print(f"expires in {body.get('expires_in')} s", file=sys.stderr)
    return 0


def _has_login(server: Any, username: str) -> bool:
    from smart_auth.accounts import normalise

    return server.store.users.find_one({"_id": normalise(username)}, {"_id": 1}) is not None


async def _issue(
    settings: Settings, username: str, password: str, scope: str, patient: str | None
) -> Any:
    from fhir_server.access.audit import AuditSink
    from fhir_server.app import build_context
    from fhir_server.db.client import open_client
    from fhir_server.db.embedded import EmbeddedDatabase
    from fhir_server.devx.token import issue
    from smart_auth.server import AuthServer

    embedded = None
    uri = settings.mongodb_uri
    if not uri:
        embedded = EmbeddedDatabase(settings.data_dir)
        uri = await asyncio.to_thread(embedded.start)
    client = open_client(uri, timeout_ms=10_000)
    # Not the start-up seeding (an argon2 hash per development login, seconds): the logins
    # are created only when the one asked for is missing (a database no server seeded yet).
    server = AuthServer(replace(settings, auto_seed=False))
    audit = None
    try:
        if settings.audit:
            ctx = build_context(settings, client[settings.database])
            audit = AuditSink(ctx.store, max_pending=settings.audit_max_pending)
            audit.start()
            server.audit_hook = audit.record_threadsafe
        await asyncio.to_thread(server.start, uri)
        if settings.auto_seed and not await asyncio.to_thread(_has_login, server, username):
            await asyncio.to_thread(server.seed_development)
        return await asyncio.to_thread(issue, server, username, password, scope, patient)
    finally:
        await asyncio.to_thread(server.close)
        if audit is not None:
            await audit.close(timeout_s=10)
        await client.close()
        if embedded is not None and embedded.owned:
            await asyncio.to_thread(embedded.stop)
