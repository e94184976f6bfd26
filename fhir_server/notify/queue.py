"""The two collections of notifications: `subscriptions` (who wants what) and
`notifications` (the queue the worker delivers from). The only module that touches them.

Delivery is claimed, never read-then-written: a worker takes a notification with one
conditional update (`state: pending, due <= now` -> `claimed` with a lease and a claim token
of its own), and records the outcome only under that token, so two server processes never
deliver one notification twice while a lease holds (docs/portal.md, "Notifications").
A process that dies mid-delivery leaves a claim whose lease runs out; the notification is
then taken again: delivery is at least once, exactly once while workers live.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

Doc = dict[str, Any]
# Subscription statuses that still take events (R4 Subscription.status).
LIVE = ("requested", "active")


def now_utc() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


class NotifyStore:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.subs = db.subscriptions
        self.queue = db.notifications

    # --- subscriptions -------------------------------------------------------------------

    async def add_subscription(self, doc: Doc, session: AsyncClientSession | None) -> None:
        await self.subs.insert_one(doc, session=session)

    async def owned(
        self, sid: str, owner: str, session: AsyncClientSession | None = None
    ) -> Doc | None:
        """One subscription of `owner`: another's answers as a missing one."""
        return await self.subs.find_one({"_id": sid, "owner": owner}, session=session)

    async def subscription(self, sid: str) -> Doc | None:
        return await self.subs.find_one({"_id": sid})

    async def list_owned(self, owner: str, statuses: list[str] | None) -> list[Doc]:
        filt: Doc = {"owner": owner}
        if statuses:
            filt["status"] = {"$in": statuses}
        return await self.subs.find(filt).sort("_id", 1).to_list(1000)

    async def delete_owned(self, sid: str, owner: str, session: AsyncClientSession | None) -> bool:
        gone = await self.subs.delete_one({"_id": sid, "owner": owner}, session=session)
        if gone.deleted_count:
            await self.queue.update_many(
                {"sub": sid, "state": "pending"},
                {"$set": {"state": "cancelled", "error": "the subscription was deleted"}},
                session=session,
            )
        return bool(gone.deleted_count)

    async def matching(
        self, topic: str, keys: list[str], session: AsyncClientSession | None
    ) -> list[Doc]:
        """Live subscriptions to `topic` whose filter names one of `keys`."""
        if not keys:
            return []
        filt = {"topic": topic, "match": {"$in": keys}, "status": {"$in": list(LIVE)}}
        return await self.subs.find(filt, session=session).to_list(10_000)

    async def set_status(
        self, sid: str, status: str, *, only_from: str | None = None, error: str | None = None
    ) -> None:
        filt: Doc = {"_id": sid}
        if only_from is not None:
            filt["status"] = only_from
        update: Doc = {"status": status}
        if error is not None:
            update["error"] = error
        await self.subs.update_one(filt, {"$set": update})

    async def next_event_number(self, sid: str) -> int | None:
        """The subscription's next event number (events-since-subscription-start), taken
        with one atomic increment at delivery time, so no write transaction contends on it."""
        doc = await self.subs.find_one_and_update(
            {"_id": sid}, {"$inc": {"events": 1}}, return_document=ReturnDocument.AFTER
        )
        return int(doc["events"]) if doc is not None else None

    async def take_event(self, sid: str) -> Doc | None:
        """An active subscription with its next event number taken (`events`), in one
        update; None when it is not active (or gone)."""
        return await self.subs.find_one_and_update(
            {"_id": sid, "status": "active"},
            {"$inc": {"events": 1}},
            return_document=ReturnDocument.AFTER,
        )

    async def due_heartbeats(self, now: datetime) -> list[Doc]:
        filt = {"status": "active", "heartbeat_s": {"$ne": None}, "next_heartbeat": {"$lte": now}}
        return await self.subs.find(filt).to_list(1000)

    async def take_heartbeat(self, sub: Doc, now: datetime) -> bool:
        """Move the subscription's next heartbeat on, conditionally: of several processes
        that saw it due, one wins and sends it."""
        nxt = now + timedelta(seconds=int(sub["heartbeat_s"]))
        got = await self.subs.update_one(
            {"_id": sub["_id"], "next_heartbeat": sub["next_heartbeat"]},
            {"$set": {"next_heartbeat": nxt}},
        )
        return bool(got.modified_count)

    async def push_heartbeat(self, sid: str, seconds: int | None, now: datetime) -> None:
        """Traffic counts as a sign of life: the next heartbeat is a period after it."""
        if seconds:
            await self.subs.update_one(
                {"_id": sid}, {"$set": {"next_heartbeat": now + timedelta(seconds=seconds)}}
            )

    # --- the queue -----------------------------------------------------------------------

    @staticmethod
    def item(kind: str, notification: str, *, due: datetime | None = None, **fields: Any) -> Doc:
        now = now_utc()
        return {
            "_id": new_id(),
            "kind": kind,  # rest-hook | email
            "type": notification,  # handshake | heartbeat | event-notification
            "state": "pending",
            "due": due or now,
            "created": now,
            "attempts": 0,
            **fields,
        }

    async def enqueue(self, items: list[Doc], session: AsyncClientSession | None) -> None:
        if items:
            await self.queue.insert_many(items, session=session)

    async def cancel_result(self, result: str, session: AsyncClientSession | None) -> None:
        """Cancel the pending notifications queued for a result (`result` field): its hold
        or status changed, so results release queues them anew (access/release_workflow.py)."""
        await self.queue.update_many(
            {"result": result, "state": "pending"},
            {"$set": {"state": "cancelled", "error": "the result's release changed"}},
            session=session,
        )

    async def claim(self, lease_s: float, n: int = 1) -> list[Doc]:
        """Take up to `n` due notifications (oldest first), then ones whose claim lapsed.

        The query only proposes candidates; each is taken by a conditional update on the
        state it was read in (state, claim token, attempts), so of two workers that read
        the same candidate exactly one takes it. One query per batch: on MongoDB it walks
        the `(state, due)` index for `n` entries; SecantusDB reads every match for it
        (docs/portal.md, "Queue and worker"), so batching divides that cost by `n`."""
        now = now_utc()
        taken: list[Doc] = []
        for filt, order in (
            ({"state": "pending", "due": {"$lte": now}}, "due"),
            ({"state": "claimed", "lease": {"$lte": now}}, "lease"),
        ):
            want = n - len(taken)
            if want <= 0:
                break
            cursor = self.queue.find(filt, sort=[("state", 1), (order, 1)], limit=want)
            for cand in await cursor.to_list(want):
                grab = {
                    "state": "claimed",
                    "claim": new_id(),
                    "lease": now + timedelta(seconds=lease_s),
                }
                same = {
                    "_id": cand["_id"],
                    "state": cand["state"],
                    "claim": cand.get("claim"),
                    "attempts": cand.get("attempts", 0),
                }
                got = await self.queue.update_one(same, {"$set": grab})
                if got.modified_count:
                    taken.append({**cand, **grab})
        return taken

    async def _settle(self, item: Doc, update: Doc) -> bool:
        got = await self.queue.update_one(
            {"_id": item["_id"], "state": "claimed", "claim": item["claim"]}, update
        )
        return bool(got.modified_count)

    async def delivered(self, item: Doc) -> bool:
        return await self._settle(
            item,
            {
                "$set": {
                    "state": "done",
                    "delivered": now_utc(),
                    "error": None,
                    "event": item.get("event"),
                },
                "$inc": {"attempts": 1},
                "$unset": {"lease": ""},
            },
        )

    async def retry(self, item: Doc, due: datetime, error: str) -> bool:
        return await self._settle(
            item,
            {
                "$set": {
                    "state": "pending",
                    "due": due,
                    "error": error,
                    "event": item.get("event"),
                },
                "$inc": {"attempts": 1},
            },
        )

    async def defer(self, item: Doc, due: datetime) -> bool:
        """Put back without counting an attempt (the subscription's handshake is pending)."""
        return await self._settle(item, {"$set": {"state": "pending", "due": due}})

    async def give_up(self, item: Doc, state: str, error: str) -> bool:
        return await self._settle(
            item, {"$set": {"state": state, "error": error}, "$inc": {"attempts": 1}}
        )

    async def release(self, item: Doc) -> None:
        """A stopping worker hands back what it had not finished."""
        await self.queue.update_one(
            {"_id": item["_id"], "state": "claimed", "claim": item["claim"]},
            {"$set": {"state": "pending", "due": now_utc()}},
        )
