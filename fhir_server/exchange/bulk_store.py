"""Bulk export jobs and their output files, kept in MongoDB.

All state lives in the database, so any server process on it answers a job's status and
files (DESIGN.md: stateless processes). `bulk_jobs` holds one document per job; `bulk_files`
holds the output as chunks of ndjson (at most `CHUNK_BYTES` each, far under MongoDB's
16 MB document limit), keyed `(job, n, seq)`. Both carry `expires`, a TTL index removes them
(MongoDB's TTL monitor runs about once a minute, so readers also treat an expired job as
gone). A running job refreshes `heartbeat`; an in-progress job whose heartbeat went stale
belongs to a process that died, and is marked failed.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import Binary
from pymongo import ASCENDING, IndexModel

from fhir_server.errors import Issue, operation_outcome

Doc = dict[str, Any]

JOBS = "bulk_jobs"
FILES = "bulk_files"
CHUNK_BYTES = 1 << 20
# How long a job and its files are kept after it finishes (or after kick-off, while running).
KEEP = timedelta(hours=24)
# A heartbeat older than this means the process running the job is gone.
STALE = timedelta(seconds=60)
ORPHANED = "the export was interrupted: the server process running it stopped; kick it off again"


def now() -> datetime:
    t = datetime.now(UTC)
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


def owner_of(auth: Any) -> Doc | None:
    """Who may poll a job and read its files: the same client and the same user."""
    if auth is None:
        return None
    return {"client": auth.client_id, "subject": auth.subject, "user": auth.fhir_user}


class JobStore:
    def __init__(self, db: Any, max_time_ms: int) -> None:
        self.jobs = db[JOBS]
        self.files = db[FILES]
        self.ms = max_time_ms

    async def ensure_indexes(self) -> None:
        await self.jobs.create_indexes(
            [
                IndexModel([("expires", ASCENDING)], name="ttl", expireAfterSeconds=0),
                IndexModel([("owner", ASCENDING), ("status", ASCENDING)], name="owner_status"),
                IndexModel([("status", ASCENDING), ("heartbeat", ASCENDING)], name="status_hb"),
            ]
        )
        await self.files.create_indexes(
            [
                IndexModel([("expires", ASCENDING)], name="ttl", expireAfterSeconds=0),
                IndexModel(
                    [("job", ASCENDING), ("n", ASCENDING), ("seq", ASCENDING)], name="job_n_seq"
                ),
            ]
        )

    async def create(self, job: Doc) -> None:
        await self.jobs.insert_one(job)

    async def get(self, job_id: str) -> Doc | None:
        doc: Doc | None = await self.jobs.find_one({"_id": job_id}, max_time_ms=self.ms)
        if doc is None or doc["expires"] <= now():
            return None
        return doc

    async def active(self, owner: Doc | None) -> int:
        return int(
            await self.jobs.count_documents(
                {"owner": owner, "status": "in-progress"}, maxTimeMS=self.ms
            )
        )

    async def heartbeat(self, job_id: str, worker: str, progress: str) -> bool:
        """Record progress; False when the job was deleted (cancelled) meanwhile."""
        r = await self.jobs.update_one(
            {"_id": job_id, "status": "in-progress", "worker": worker},
            {"$set": {"heartbeat": now(), "progress": progress}},
        )
        return r.matched_count == 1

    async def complete(
        self, job_id: str, worker: str, output: list[Doc], errors: list[Doc]
    ) -> bool:
        t = now()
        r = await self.jobs.update_one(
            {"_id": job_id, "status": "in-progress", "worker": worker},
            {
                "$set": {
                    "status": "completed",
                    "output": output,
                    "error": errors,
                    "finished": t,
                    "expires": t + KEEP,
                }
            },
        )
        # The files already outlive the job (`put_chunk`): no rewrite of every chunk here.
        return r.matched_count == 1

    async def fail(self, job_id: str, status: int, outcome: Doc, worker: str | None = None) -> None:
        """Only an in-progress job fails; a cancelled (deleted) one stays gone."""
        query: Doc = {"_id": job_id, "status": "in-progress"}
        if worker is not None:
            query["worker"] = worker
        t = now()
        r = await self.jobs.update_one(
            query,
            {
                "$set": {
                    "status": "failed",
                    "failure": {"status": status, "outcome": outcome},
                    "finished": t,
                    "expires": t + KEEP,
                }
            },
        )
        if r.matched_count == 1:
            await self.files.delete_many({"job": job_id})

    async def delete(self, job_id: str) -> None:
        await self.jobs.delete_one({"_id": job_id})
        await self.files.delete_many({"job": job_id})

    async def put_chunk(
        self, job_id: str, n: int, seq: int, data: bytes, expires: datetime
    ) -> None:
        """One chunk of a running job's file; `expires` is the job's (kick-off + `KEEP`).
        The chunk is kept `KEEP` longer: a job finishes within `KEEP` of its kick-off (a
        running job expires then, and its task stops at the next heartbeat), so its files
        outlive the finished job's own `KEEP` without being rewritten when it completes.
        Readers reach files only through their job, so the surplus is never served."""
        await self.files.insert_one(
            {
                "_id": f"{job_id}/{n}/{seq}",
                "job": job_id,
                "n": n,
                "seq": seq,
                "data": Binary(data),
                "expires": expires + KEEP,
            }
        )

    async def chunks(self, job_id: str, n: int) -> AsyncGenerator[bytes]:
        """A file's bytes, chunk by chunk, in order (two chunks per round trip), so a
        download holds a few MiB whatever the file's size."""
        cursor = self.files.find(
            {"job": job_id, "n": n}, {"data": 1}, max_time_ms=self.ms, batch_size=2
        ).sort([("seq", ASCENDING)])
        try:
            async for doc in cursor:
                yield bytes(doc["data"])
        finally:
            await cursor.close()

    async def recover(self, stale_before: datetime) -> int:
        """Mark failed every in-progress job whose worker stopped beating before the time."""
        query = {"status": "in-progress", "heartbeat": {"$lt": stale_before}}
        return await self._fail_all(query, 500, orphan_outcome())

    async def fail_worker(self, worker: str, status: int, outcome: Doc) -> int:
        """Mark failed every in-progress job of one process (its shutdown)."""
        return await self._fail_all({"status": "in-progress", "worker": worker}, status, outcome)

    async def _fail_all(self, query: Doc, status: int, outcome: Doc) -> int:
        ids = [d["_id"] async for d in self.jobs.find(query, {"_id": 1}, max_time_ms=self.ms)]
        for job_id in ids:
            await self.fail(job_id, status, outcome)
        return len(ids)


def orphan_outcome() -> Doc:
    return operation_outcome([Issue("incomplete", ORPHANED)])
