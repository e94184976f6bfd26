"""Claims: the one document per idempotent create that concurrent writers race on.

A conditional create (`If-None-Exist`) or a create carrying an `Idempotency-Key` first reads
its claim document (`idempotency_keys`, `_id` a digest of what it claims), then searches or
replays, then, in the transaction that writes the resource, moves the claim on from the
counter it read (`n`): an insert when there was none (a duplicate `_id` fails), else an
update conditional on `n`. Of two writers that read the same claim only one can move it;
the other's transaction fails and it starts again, and its search then finds what the first
one created (docs/rest.md, "Idempotent creates"). A lost race is never a read-then-write.

The only module that touches `idempotency_keys`. Claims expire (`exp`, a TTL index); an
expired claim is read as holding no answer, and moved on like any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, OperationFailure

from fhir_server.storage.limits import time_limited
from fhir_server.storage.store import now_utc

Doc = dict[str, Any]
COLLECTION = "idempotency_keys"


class LostRace(Exception):
    """Another writer moved the claim first: read it again and start over."""


@dataclass(frozen=True)
class Claim:
    """A claim as read: `seen` its counter (0: no document), and the answer it holds
    while it has not expired (`result` "Type/id", `status`, and for an Idempotency-Key the
    request's `fingerprint`)."""

    key: str
    seen: int = 0
    result: str | None = None
    status: int | None = None
    fingerprint: str | None = None


def index_models() -> list[IndexModel]:
    # MongoDB drops a claim once `exp` has passed (SecantusDB keeps it: it is read as
    # expired, which answers the same).
    return [IndexModel([("exp", ASCENDING)], name="exp_ttl", expireAfterSeconds=0)]


class ClaimStore:
    def __init__(self, db: AsyncDatabase[Doc], max_time_ms: int) -> None:
        self.col = db[COLLECTION]
        self.max_time_ms = max_time_ms

    async def ensure_indexes(self) -> None:
        await self.col.create_indexes(index_models())

    async def read(self, key: str, *, session: AsyncClientSession | None = None) -> Claim:
        with time_limited("Reading the idempotency claim"):
            doc = await self.col.find_one(
                {"_id": key}, session=session, max_time_ms=self.max_time_ms
            )
        if doc is None:
            return Claim(key)
        live = doc.get("exp") is None or _aware(doc["exp"]) > now_utc()
        if not live:
            return Claim(key, seen=int(doc.get("n", 0)))
        return Claim(
            key,
            seen=int(doc.get("n", 0)),
            result=doc.get("res"),
            status=doc.get("status"),
            fingerprint=doc.get("fp"),
        )

    async def take(
        self,
        claim: Claim,
        *,
        result: str,
        status: int,
        fingerprint: str | None,
        ttl_s: int,
        session: AsyncClientSession,
    ) -> None:
        """Move `claim` on from the counter read, recording the answer; LostRace when
        another writer moved it first (in `session`'s transaction, which then fails)."""
        fields = {
            "res": result,
            "status": status,
            "fp": fingerprint,
            "exp": now_utc() + timedelta(seconds=ttl_s),
        }
        try:
            if claim.seen == 0:
                await self.col.insert_one({"_id": claim.key, "n": 1, **fields}, session=session)
                return
            r = await self.col.update_one(
                {"_id": claim.key, "n": claim.seen},
                {"$set": fields, "$inc": {"n": 1}},
                session=session,
            )
        except DuplicateKeyError:
            raise LostRace from None
        except OperationFailure as exc:
            if exc.code == 112 or exc.has_error_label("TransientTransactionError"):
                raise LostRace from None
            raise
        if r.matched_count != 1:
            raise LostRace


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)
