"""The authorization server's state in MongoDB, through the synchronous PyMongo client.

authlib is synchronous, so its endpoints run in a thread pool with this client, never the
async one (DESIGN.md, "Decisions"). Every piece of state lives here, so any number of server
processes can share one database behind a load balancer: pending logins, codes, grants,
token records, refresh chains, the client-assertion ``jti`` cache, lockout counters and the
signing keys. Expired records are removed by TTL indexes on ``expires_at`` and are also
checked for expiry on read (TTL deletion is lazy).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, IndexModel, MongoClient
from pymongo.collection import Collection
from pymongo.database import Database

from fhir_server.db.client import client_options
from smart_auth.revocations import Revocation, publish

Doc = dict[str, Any]

TTL = IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0, name="ttl")
INDEXES: dict[str, list[IndexModel]] = {
    "auth_requests": [TTL],
    "auth_codes": [TTL],
    "auth_jti": [TTL],
    "auth_launch": [TTL],
    "auth_manage": [TTL],
    "auth_tokens": [TTL, IndexModel([("grant_id", ASCENDING)], name="grant")],
    "auth_refresh": [TTL, IndexModel([("grant_id", ASCENDING)], name="grant")],
    "auth_grants": [
        IndexModel([("client_id", ASCENDING)], name="client"),
        IndexModel([("username", ASCENDING)], name="username"),
    ],
    "auth_events": [IndexModel([("at", ASCENDING)], name="at")],
}


def now() -> datetime:
    return datetime.now(UTC)


def later(seconds: float) -> datetime:
    return now() + timedelta(seconds=seconds)


def digest(secret: str) -> str:
    """Store only a hash of bearer secrets (codes, refresh tokens, cookies): a read of the
    database then gives nothing that can be replayed."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def expired(doc: Doc | None) -> bool:
    return doc is None or aware(doc["expires_at"]) <= now()


class AuthStore:
    """Named collections of one database; opened once per process."""

    def __init__(self, uri: str, database: str, *, timeout_ms: int = 5000) -> None:
        # authlib is synchronous: this is the sync client, with the FHIR server's options.
        self.client: MongoClient[Doc] = MongoClient(uri, **client_options(timeout_ms))
        self.db: Database[Doc] = self.client[database]
        # Called with each `auth_events` row once written (the FHIR server's audit sink).
        self.on_event: Callable[[Doc], None] | None = None
        # Called with what was revoked, once recorded and published (this process's token
        # cache drops it at once; the others read the feed).
        self.on_revoke: Callable[[list[Revocation]], None] | None = None

    def __getitem__(self, name: str) -> Collection[Doc]:
        return self.db[name]

    @property
    def users(self) -> Collection[Doc]:
        return self.db.auth_users

    @property
    def clients(self) -> Collection[Doc]:
        return self.db.auth_clients

    @property
    def keys(self) -> Collection[Doc]:
        return self.db.auth_keys

    @property
    def meta(self) -> Collection[Doc]:
        return self.db.auth_meta

    @property
    def requests(self) -> Collection[Doc]:
        return self.db.auth_requests

    @property
    def codes(self) -> Collection[Doc]:
        return self.db.auth_codes

    @property
    def grants(self) -> Collection[Doc]:
        return self.db.auth_grants

    @property
    def tokens(self) -> Collection[Doc]:
        return self.db.auth_tokens

    @property
    def refresh(self) -> Collection[Doc]:
        return self.db.auth_refresh

    @property
    def jti(self) -> Collection[Doc]:
        return self.db.auth_jti

    @property
    def launch(self) -> Collection[Doc]:
        return self.db.auth_launch

    @property
    def manage(self) -> Collection[Doc]:
        """Sessions of the connected-apps page (smart_auth/manage.py)."""
        return self.db.auth_manage

    @property
    def events(self) -> Collection[Doc]:
        return self.db.auth_events

    def ensure_indexes(self) -> None:
        for name, models in INDEXES.items():
            self.db[name].create_indexes(models)

    # Every revocation goes through one of these four: the records first, then the feed
    # (smart_auth/revocations.py), so a process that learns of it re-verifies and refuses.

    def revoke_token(self, jti: str, reason: str) -> None:
        """Revoke one access token (RFC 7009 section 2.1)."""
        self.tokens.update_one({"_id": jti}, {"$set": _stamp(reason)})
        self._published([Revocation("token", jti)])

    def revoke_grant(self, grant_id: str, reason: str) -> None:
        """Revoke a grant and everything issued under it, at once."""
        self._revoke_grants([grant_id], reason)
        self._published([Revocation("grant", grant_id)])

    def revoke_account(self, username: str, reason: str) -> None:
        """Revoke every grant of an account (its lockout), user tokens of every client."""
        self._revoke_grants(self._grant_ids({"username": username}), reason)
        self._published([Revocation("account", username)])

    def revoke_client(self, client_id: str, reason: str) -> None:
        """Revoke every grant of a client (it was disabled), its backend tokens included."""
        self._revoke_grants(self._grant_ids({"client_id": client_id}), reason)
        self._published([Revocation("client", client_id)])

    def _grant_ids(self, which: Doc) -> list[str]:
        # One indexed field only (auth_grants "username" / "client"): the embedded database
        # scans when a second predicate joins it (docs/database.md).
        return [g["_id"] for g in self.grants.find(which, {"_id": 1})]

    def _revoke_grants(self, ids: list[str], reason: str) -> None:
        if not ids:
            return
        stamp = _stamp(reason)
        self.grants.update_many({"_id": {"$in": ids}}, {"$set": stamp})
        self.tokens.update_many({"grant_id": {"$in": ids}}, {"$set": stamp})
        self.refresh.update_many(
            {"grant_id": {"$in": ids}}, {"$set": {**stamp, "status": "revoked"}}
        )

    def _published(self, events: list[Revocation]) -> None:
        publish(self, events)
        hook = self.on_revoke
        if hook is not None:
            hook(events)

    def close(self) -> None:
        self.client.close()


def _stamp(reason: str) -> Doc:
    return {"revoked": True, "revoked_at": now(), "revoked_reason": reason}
