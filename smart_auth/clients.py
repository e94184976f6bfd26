"""Registered SMART clients: the authlib client model, and registration from JSON.

- Redirect URIs match exactly, except loopback IP redirects, where any port is accepted
  (RFC 8252 section 7.3, "Loopback Interface Redirection").
- Confidential symmetric clients authenticate with ``client_secret_basic``; the secret is
  stored as an argon2 hash (SMART App Launch 2.2, "Confidential symmetric client").
- Asymmetric clients and backend services register a JWK Set inline or by URL
  (SMART App Launch 2.2, "Client Authentication: Asymmetric (public key)").
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from authlib.oauth2.rfc6749 import ClientMixin

from smart_auth import scopes as sc
from smart_auth.store import AuthStore, now

LOOPBACK_HOSTS = {"127.0.0.1", "::1"}
AUTH_METHODS = {"none", "client_secret_basic", "private_key_jwt"}
_hasher = PasswordHasher()


def loopback_match(registered: str, requested: str) -> bool:
    """RFC 8252 section 7.3: same scheme, loopback host, path and query; any port."""
    reg, req = urlsplit(registered), urlsplit(requested)
    if reg.scheme != "http" or req.scheme != "http" or reg.fragment or req.fragment:
        return False
    if reg.hostname not in LOOPBACK_HOSTS or req.hostname != reg.hostname:
        return False
    if req.username or req.password:
        return False
    try:
        port = req.port  # raises on a malformed port
    except ValueError:
        return False
    if port == 0:
        # Port 0 means "any free port" to a socket: no app can listen on it, so a code sent
        # there could only land wherever a client library or proxy maps it.
        return False
    return (reg.path or "/") == (req.path or "/") and reg.query == req.query


def origin_of(url: str) -> str | None:
    """The origin (RFC 6454 section 4) of an absolute http(s) URL, as a browser sends it
    in ``Origin``: ``scheme://host[:port]``, default ports left out."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    default = {"http": 80, "https": 443}[parts.scheme]
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


def origin_allowed(origin: str, redirect_uris: list[str]) -> bool:
    """Whether a browser page at ``origin`` belongs to a client with one of these redirect
    URIs: the redirect URI's own origin, or, for a loopback redirect URI, the same loopback
    host on any port (the port freedom RFC 8252 section 7.3 gives the redirect itself)."""
    asked = origin_of(origin)
    if asked is None or asked != origin.rstrip("/"):
        return False
    for uri in redirect_uris:
        if origin_of(uri) == asked:
            return True
        reg = urlsplit(uri)
        if reg.scheme == "http" and reg.hostname in LOOPBACK_HOSTS:
            req = urlsplit(asked)
            if req.scheme == "http" and req.hostname == reg.hostname:
                return True
    return False


def registered_redirect_uris(store: AuthStore) -> list[str]:
    """Every registered client's redirect URIs (the CORS origins, docs/rest.md)."""
    out: list[str] = []
    for doc in store.clients.find({}, {"redirect_uris": 1, "disabled": 1}):
        if doc.get("disabled"):
            continue
        out.extend(u for u in doc.get("redirect_uris", []) if isinstance(u, str))
    return out


def allowed_scope(requested: str | None, registered: str) -> str:
    """The requested scope cut down to what the client registered (RFC 6749 section 3.3:
    the server may issue less than asked). Resource scopes are narrowed by the SMART scope
    lattice; other scopes (``openid``, ``launch/patient``...) must be registered as such."""
    reg_words = set(sc.split(registered))
    ceiling = sc.parse_scopes(registered)
    out: list[str] = []
    for text in sc.split(requested):
        try:
            parsed = sc.parse_scope(text)
        except sc.InvalidScope:
            continue
        if parsed is None:
            if text in reg_words:
                out.append(text)
            continue
        out.extend(str(s) for s in sc.narrow([parsed], ceiling))
    return " ".join(dict.fromkeys(out))


@dataclass
class SmartClient(ClientMixin):  # type: ignore[misc]
    client_id: str
    name: str
    auth_method: str
    redirect_uris: list[str] = field(default_factory=list)
    grant_types: list[str] = field(default_factory=list)
    scope: str = ""
    secret_hash: str | None = None
    jwks: dict[str, Any] | None = None
    jwks_uri: str | None = None
    signing_alg: str | None = None

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> SmartClient:
        return cls(
            client_id=doc["_id"],
            name=doc.get("name", doc["_id"]),
            auth_method=doc["auth_method"],
            redirect_uris=list(doc.get("redirect_uris", [])),
            grant_types=list(doc.get("grant_types", [])),
            scope=doc.get("scope", ""),
            secret_hash=doc.get("secret_hash"),
            jwks=doc.get("jwks"),
            jwks_uri=doc.get("jwks_uri"),
            signing_alg=doc.get("signing_alg"),
        )

    @property
    def is_public(self) -> bool:
        return self.auth_method == "none"

    # authlib ClientMixin
    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        # SMART requires redirect_uri on every authorize request; never guess one.
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        return allowed_scope(scope, self.scope)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        if redirect_uri in self.redirect_uris:
            return True
        return any(loopback_match(r, redirect_uri) for r in self.redirect_uris)

    def check_client_secret(self, client_secret: str) -> bool:
        if not self.secret_hash:
            return False
        try:
            return bool(_hasher.verify(self.secret_hash, client_secret))
        except (VerificationError, InvalidHashError):
            return False

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and "authorization_code" in self.grant_types

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types


def public_jwk(jwk: dict[str, Any]) -> dict[str, Any]:
    """The public half of a private JWK (RFC 7518 sections 6.2.1 and 6.3.1)."""
    keep = {"kty", "kid", "alg", "use", "key_ops", "n", "e", "crv", "x", "y"}
    return {k: v for k, v in jwk.items() if k in keep}


def client_doc(entry: dict[str, Any]) -> dict[str, Any]:
    """A stored client from a ``seed_data/clients.json``-style entry (secrets hashed)."""
    method = entry.get("token_endpoint_auth_method", "none")
    if method not in AUTH_METHODS:
        raise ValueError(f"{entry['client_id']}: unsupported auth method {method!r}")
    doc: dict[str, Any] = {
        "_id": entry["client_id"],
        "name": entry.get("client_name", entry["client_id"]),
        "auth_method": method,
        "redirect_uris": list(entry.get("redirect_uris", [])),
        "grant_types": list(entry.get("grant_types", ["authorization_code"])),
        "scope": entry.get("scope", ""),
        "signing_alg": entry.get("token_endpoint_auth_signing_alg"),
        "role": entry.get("role"),
    }
    # A partner (docs/exchange.md): the Organization it acts for, stamped on the Provenance
    # of what it imports, and the URL prefixes `$import` may pull files from.
    if entry.get("organization"):
        doc["organization"] = str(entry["organization"])
    if entry.get("import_urls"):
        doc["import_urls"] = [str(u) for u in entry["import_urls"]]
    if method == "client_secret_basic":
        doc["secret_hash"] = _hasher.hash(entry["client_secret"])
    if method == "private_key_jwt":
        if "jwk" in entry:
            doc["jwks"] = {"keys": [public_jwk(entry["jwk"])]}
        elif "jwks" in entry:
            doc["jwks"] = {"keys": [public_jwk(k) for k in entry["jwks"]["keys"]]}
        elif "jwks_uri" in entry:
            doc["jwks_uri"] = entry["jwks_uri"]
        else:
            raise ValueError(f"{entry['client_id']}: private_key_jwt needs jwk, jwks or jwks_uri")
    return doc


def register_client(store: AuthStore, entry: dict[str, Any]) -> None:
    """Create or replace one client registration (a disabled client stays disabled)."""
    doc = client_doc(entry)
    doc["registered_at"] = now()
    old = store.clients.find_one({"_id": doc["_id"]}, {"disabled": 1})
    if old is not None and old.get("disabled"):
        doc["disabled"] = True
    store.clients.replace_one({"_id": doc["_id"]}, doc, upsert=True)


def disable_client(store: AuthStore, client_id: str) -> bool:
    """Stop a client: it can no longer authenticate, and every grant and token it holds is
    revoked in every process within a second (docs/smart.md, "Token cache"). False when
    there is no such client."""
    found = store.clients.update_one(
        {"_id": client_id}, {"$set": {"disabled": True, "disabled_at": now()}}
    )
    if found.matched_count == 0:
        return False
    store.revoke_client(client_id, "client disabled")
    return True


def enable_client(store: AuthStore, client_id: str) -> bool:
    """Let a disabled client authenticate again (its revoked grants stay revoked)."""
    found = store.clients.update_one({"_id": client_id}, {"$unset": {"disabled": ""}})
    return found.matched_count > 0


def list_clients(store: AuthStore) -> list[dict[str, Any]]:
    """Every registration, without secrets (for `fhir-server clients list|show`)."""
    hide = {"secret_hash": 0}
    return list(store.clients.find({}, hide).sort("_id", 1))


def register_clients_file(store: AuthStore, path: Path) -> int:
    entries = json.loads(path.read_text(encoding="utf-8"))["clients"]
    for entry in entries:
        register_client(store, entry)
    return len(entries)


def load_client(store: AuthStore, client_id: object) -> SmartClient | None:
    if not isinstance(client_id, str) or not client_id:
        return None
    doc = store.clients.find_one({"_id": client_id})
    return SmartClient.from_doc(doc) if doc and not doc.get("disabled") else None
