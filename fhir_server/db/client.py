"""Opening the database: one AsyncMongoClient per process, created in the app lifespan."""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING, AsyncMongoClient, IndexModel
from pymongo.asynchronous.database import AsyncDatabase

Doc = dict[str, Any]

# Indexes storage itself relies on; search adds its own (fhir_server.search.indexes).
# All ascending: MongoDB walks them backwards for newest-first sorts, and SecantusDB
# 0.7.0b3 loses boundary values of inclusive ranges on descending compound fields
# (docs/database.md, "Known SecantusDB defects").
RESOURCE_INDEXES = [
    IndexModel([("rt", ASCENDING), ("lu", ASCENDING), ("_id", ASCENDING)], name="rt_lu"),
    # A patient's resources of one type, newest first by the `date` parameter's sort value
    # (the portal's hot shape: lab Observations, Encounters, Appointments, reports), with
    # `_id` last for the tie-break and keyset cursors. `comp` has one entry for most
    # resources, so this costs about what `(comp, rt)` did; it also serves `$everything`
    # and compartment searches by its `(comp, rt)` prefix. Search adds the `comp` clause
    # that reaches it (execute.implied_compartment).
    IndexModel(
        [("comp", ASCENDING), ("rt", ASCENDING), ("ix.o.date", ASCENDING), ("_id", ASCENDING)],
        name="comp_rt_date",
    ),
    IndexModel([("lu", ASCENDING), ("_id", ASCENDING)], name="lu"),
]
# Indexes that an earlier version created and a later one replaced: dropped at start-up, so an
# upgraded database does not pay the writes of both (`comp_rt` -> `comp_rt_date`).
OBSOLETE_RESOURCE_INDEXES = ("comp_rt",)
HISTORY_INDEXES = [
    IndexModel([("rt", ASCENDING), ("id", ASCENDING), ("vid", ASCENDING)], name="rt_id_vid"),
    IndexModel([("rt", ASCENDING), ("lu", ASCENDING), ("_id", ASCENDING)], name="rt_lu"),
    IndexModel([("lu", ASCENDING), ("_id", ASCENDING)], name="lu"),
]
# Notifications (fhir_server/notify/queue.py): the worker's claim of the oldest due one, the
# claims whose lease lapsed, and a deleted subscription's pending ones.
NOTIFICATION_INDEXES = [
    IndexModel([("state", ASCENDING), ("due", ASCENDING)], name="state_due"),
    IndexModel([("state", ASCENDING), ("lease", ASCENDING)], name="state_lease"),
    IndexModel([("sub", ASCENDING), ("state", ASCENDING)], name="sub_state"),
    # A result's pending notifications, cancelled when its hold changes (results release).
    IndexModel([("result", ASCENDING), ("state", ASCENDING)], name="result_state"),
]
# Subscriptions: those a new message matches (topic and the filter's reference), a caller's
# own, and the heartbeats that are due.
SUBSCRIPTION_INDEXES = [
    IndexModel(
        [("topic", ASCENDING), ("match", ASCENDING), ("status", ASCENDING)], name="topic_match"
    ),
    IndexModel([("owner", ASCENDING), ("_id", ASCENDING)], name="owner"),
    IndexModel([("status", ASCENDING), ("next_heartbeat", ASCENDING)], name="heartbeat"),
]


# A socket read waits at most this long (the server's default, DB_SOCKET_TIMEOUT_MS): well past
# any query's time limit, so only a database that stopped answering trips it.
SOCKET_TIMEOUT_MS = 30_000
# Connecting, and the driver's heartbeat, may take this long before the server is marked
# unknown (see client_options).
CONNECT_TIMEOUT_MS = 10_000
# A pooled connection idle this long is closed by the driver rather than reused: SecantusDB
# closes a client connection after 5 minutes without a request (firewalls and load balancers
# have their own limits), and the first operation on such a socket fails (db/retry.py).
MAX_IDLE_TIME_MS = 120_000


def client_options(timeout_ms: int, socket_timeout_ms: int = SOCKET_TIMEOUT_MS) -> dict[str, Any]:
    """Options every client of the project uses, async (FHIR) or sync (authorization).

    Failures surface quickly (requests answer 503, not hang): server selection and connecting
    within `timeout_ms`, and a socket that stops answering (a hung database) is given up after
    `socket_timeout_ms`, so no request, worker thread or shutdown waits on it forever
    (docs/rest.md, "Stopping"). Retryable writes and majority write concern, so every write
    path survives a primary step-down on a replica set (DESIGN.md, "Storage shape").
    """
    return {
        "serverSelectionTimeoutMS": timeout_ms,
        # Also the driver's heartbeat timeout: a busy database (the embedded one shares the
        # CPU) that answers a heartbeat late must not have its pool cleared and every
        # operation in flight cancelled. A database that is down refuses at once, and server
        # selection still gives up after `timeout_ms`.
        "connectTimeoutMS": max(timeout_ms, CONNECT_TIMEOUT_MS),
        "socketTimeoutMS": socket_timeout_ms,
        # Waiting for a pooled connection is bounded too (the pool is full under overload).
        "waitQueueTimeoutMS": timeout_ms,
        "maxIdleTimeMS": MAX_IDLE_TIME_MS,
        "retryWrites": True,
        "retryReads": True,
        "w": "majority",
        "tz_aware": True,
        "uuidRepresentation": "standard",
    }


def open_client(
    uri: str, *, timeout_ms: int = 3000, socket_timeout_ms: int = SOCKET_TIMEOUT_MS
) -> AsyncMongoClient[Doc]:
    return AsyncMongoClient(uri, **client_options(timeout_ms, socket_timeout_ms))


def merged_indexes(extra: list[IndexModel]) -> list[IndexModel]:
    """Storage's indexes plus search's, without two of the same name or key.

    Search lists the storage indexes it relies on too; an index whose key is a prefix of
    one already listed adds nothing (MongoDB uses the longer one for the prefix).
    """
    out = list(RESOURCE_INDEXES)
    for model in extra:
        doc = model.document
        key = list(doc["key"].items())
        clash = False
        for have in out:
            have_key = list(have.document["key"].items())
            if have.document["name"] == doc["name"] or have_key[: len(key)] == key:
                clash = True
                break
        if not clash:
            out.append(model)
    return out


async def ensure_indexes(db: AsyncDatabase[Doc], extra: list[IndexModel] | None = None) -> None:
    """Create every index idempotently (create_indexes is a no-op for existing ones)."""
    await db.resources.create_indexes(merged_indexes(list(extra or [])))
    have = {ix["name"] async for ix in await db.resources.list_indexes()}
    for name in OBSOLETE_RESOURCE_INDEXES:
        if name in have:
            await db.resources.drop_index(name)
    await db.history.create_indexes(HISTORY_INDEXES)
    await db.notifications.create_indexes(NOTIFICATION_INDEXES)
    await db.subscriptions.create_indexes(SUBSCRIPTION_INDEXES)
