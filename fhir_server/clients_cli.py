"""`fhir-server clients add|list|show|disable|enable`: the operator's register of SMART
clients, partners included (docs/exchange.md, "Partner clients").

Registrations live in MongoDB (`auth_clients`), where every server process reads them on
each token request: a client added here can ask for a token at once, and a disabled one is
refused on its next token request, every grant and token it holds revoked and the
revocation published on the feed every process's token cache follows (docs/smart.md,
"Token cache").
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from pathlib import Path
from typing import Any

from fhir_server.config import Settings

ROLES = {
    # role -> (auth method, grant types)
    "backend-service": ("private_key_jwt", ["client_credentials"]),
    "confidential-app": ("client_secret_basic", ["authorization_code", "refresh_token"]),
}


def add_parser(sub: Any) -> None:
    p = sub.add_parser("clients", help="register, list, show, disable or enable SMART clients")
    acts = p.add_subparsers(dest="action", required=True)
    a = acts.add_parser("add", help="register (or replace) a confidential or backend client")
    a.add_argument("client_id")
    a.add_argument("--role", choices=sorted(ROLES), default="backend-service")
    a.add_argument("--name", help="a display name")
    a.add_argument("--scope", required=True, help='e.g. "system/*.cruds"')
    keys = a.add_mutually_exclusive_group()
    keys.add_argument("--jwks", help="a JWK Set (JSON text or @file) of the client's public keys")
    keys.add_argument("--jwks-uri", help="where the client publishes its JWK Set")
    a.add_argument("--alg", default="RS384", help="the client's signing algorithm")
    a.add_argument("--redirect-uri", action="append", default=[], help="(confidential apps)")
    a.add_argument("--organization", help="Organization/<id> the partner acts for")
    a.add_argument(
        "--import-url", action="append", default=[], help="a URL prefix $import may pull from"
    )
    acts.add_parser("list", help="every registered client")
    s = acts.add_parser("show", help="one client's registration (no secrets)")
    s.add_argument("client_id")
    for name in ("disable", "enable"):
        d = acts.add_parser(
            name, help=f"{name} a client" + (" and revoke its tokens" if name == "disable" else "")
        )
        d.add_argument("client_id")


def _jwks(text: str) -> dict[str, Any]:
    raw = Path(text[1:]).read_text(encoding="utf-8") if text.startswith("@") else text
    value = json.loads(raw)
    if isinstance(value, dict) and "keys" not in value:
        value = {"keys": [value]}
    if not isinstance(value, dict) or not isinstance(value.get("keys"), list):
        raise ValueError("--jwks must be a JWK Set or one JWK")
    return value


def entry_of(args: argparse.Namespace) -> tuple[dict[str, Any], str | None]:
    """The registration entry (as in seed_data/clients.json) and a new secret, if any."""
    method, grants = ROLES[args.role]
    entry: dict[str, Any] = {
        "client_id": args.client_id,
        "client_name": args.name or args.client_id,
        "role": args.role,
        "token_endpoint_auth_method": method,
        "grant_types": grants,
        "scope": args.scope,
        "redirect_uris": args.redirect_uri,
    }
    secret = None
    if method == "private_key_jwt":
        if args.jwks:
            entry["jwks"] = _jwks(args.jwks)
        elif args.jwks_uri:
            entry["jwks_uri"] = args.jwks_uri
        else:
            raise ValueError("a backend service needs --jwks or --jwks-uri")
        entry["token_endpoint_auth_signing_alg"] = args.alg
    else:
        secret = secrets.token_urlsafe(32)
        entry["client_secret"] = secret
    if args.organization:
        if not args.organization.startswith("Organization/"):
            raise ValueError("--organization must be Organization/<id>")
        entry["organization"] = args.organization
    if args.import_url:
        entry["import_urls"] = args.import_url
    return entry, secret


def run(settings: Settings, args: argparse.Namespace) -> int:
    from fhir_server.db.embedded import EmbeddedDatabase
    from smart_auth import clients
    from smart_auth.store import AuthStore

    embedded = None
    uri = settings.mongodb_uri
    if not uri:
        embedded = EmbeddedDatabase(settings.data_dir)
        uri = embedded.start()  # attaches to a running server's database
    store = AuthStore(uri, settings.database)
    try:
        return _act(store, clients, args)
    except ValueError as exc:
        print(f"clients {args.action}: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
        if embedded is not None and embedded.owned:
            embedded.stop()


def _act(store: Any, clients: Any, args: argparse.Namespace) -> int:
    if args.action == "add":
        entry, secret = entry_of(args)
        clients.register_client(store, entry)
        print(f"client {args.client_id} registered")
        if secret is not None:
            # Shown once: only its hash is stored.
            print(f"client_secret: {secret}")
        return 0
    if args.action == "list":
        for doc in clients.list_clients(store):
            state = "disabled" if doc.get("disabled") else "enabled"
            org = doc.get("organization") or "-"
            print(f"{doc['_id']}\t{doc.get('role') or doc['auth_method']}\t{state}\t{org}")
        return 0
    if args.action == "show":
        found = [d for d in clients.list_clients(store) if d["_id"] == args.client_id]
        if not found:
            print(f"no registered client {args.client_id!r}", file=sys.stderr)
            return 1
        print(json.dumps(found[0], default=str, indent=2, sort_keys=True))
        return 0
    change = clients.disable_client if args.action == "disable" else clients.enable_client
    if not change(store, args.client_id):
        print(f"no registered client {args.client_id!r}", file=sys.stderr)
        return 1
    print(f"client {args.client_id} {args.action}d")
    return 0
