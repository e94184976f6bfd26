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

Doc = dict[str, Any]

TTL = IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0, name="ttl")
INDEXES: dict[str, list[IndexModel]] = {
    "auth_requests": [TTL],
    "auth_codes": [TTL],
    "auth_jti": [TTL],
    "auth_launch": [TTL],
    "auth_tokens": [TTL, IndexModel([("grant_id", ASCENDING)], name="grant")],
    "auth_refresh": [TTL, IndexModel([("grant_id", ASCENDING)], name="grant")],
    "auth_grants": [IndexModel([("client_id", ASCENDING)], name="client")],
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
    def events(self) -> Collection[Doc]:
        return self.db.auth_events

    def ensure_indexes(self) -> None:
        for name, models in INDEXES.items():
            self.db[name].create_indexes(models)

    def revoke_grant(self, grant_id: str, reason: str) -> None:
        """Revoke a grant and everything issued under it, at once."""
        stamp = {"revoked": True, "revoked_at": now(), "revoked_reason": reason}
        self.grants.update_one({"_id": grant_id}, {"$set": stamp})
        self.tokens.update_many({"grant_id": grant_id}, {"$set": stamp})
        self.refresh.update_many({"grant_id": grant_id}, {"$set": {**stamp, "status": "revoked"}})

    def close(self) -> None:
        self.client.close()
