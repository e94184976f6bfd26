"""Import jobs and their error lines, in MongoDB: the only module that touches them.

`import_jobs` holds one document per job: who started it (the partner client, its
Organization and the token's scope, so the job can run again after a restart), its inputs,
and per input the lines done so far with their counts. A job is run by whichever process
holds its lease: a claim token and a time, taken with one conditional update (as
notify/queue.py takes a notification), renewed after each batch of lines, and the progress
is recorded only under that token, so two processes never run one job at once. A process
that dies leaves a lease that runs out; another process (or the same one restarted) takes
the job and goes on from the last recorded line. `import_errors` holds one OperationOutcome
per refused line, keyed by (job, input, line), so a batch run twice records its errors once.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, IndexModel
from pymongo.errors import DuplicateKeyError

Doc = dict[str, Any]
JOBS = "import_jobs"
ERRORS = "import_errors"


def now() -> datetime:
    t = datetime.now(UTC)
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


def new_id() -> str:
    return uuid.uuid4().hex


class ImportStore:
    def __init__(self, db: Any, max_time_ms: int) -> None:
        self.jobs = db[JOBS]
        self.errors = db[ERRORS]
        self.ms = max_time_ms

    async def ensure_indexes(self) -> None:
        await self.jobs.create_indexes(
            [
                IndexModel([("expires", ASCENDING)], name="ttl", expireAfterSeconds=0),
                IndexModel([("owner", ASCENDING), ("status", ASCENDING)], name="owner_status"),
                IndexModel([("status", ASCENDING), ("lease", ASCENDING)], name="status_lease"),
            ]
        )
        await self.errors.create_indexes(
            [
                IndexModel([("expires", ASCENDING)], name="ttl", expireAfterSeconds=0),
                IndexModel(
                    [("job", ASCENDING), ("input", ASCENDING), ("line", ASCENDING)],
                    name="job_input_line",
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

    async def claim(self, lease_s: float, worker: str) -> Doc | None:
        """Take one in-progress job whose lease ran out (its process died or stopped), by a
        conditional update on the claim it was read with."""
        t = now()
        cursor = self.jobs.find(
            {"status": "in-progress", "lease": {"$lte": t}},
            sort=[("status", 1), ("lease", 1)],
            limit=5,
            max_time_ms=self.ms,
        )
        for cand in await cursor.to_list(5):
            grab = {"claim": new_id(), "lease": t + timedelta(seconds=lease_s), "worker": worker}
            got = await self.jobs.update_one(
                {"_id": cand["_id"], "status": "in-progress", "claim": cand.get("claim")},
                {"$set": grab, "$inc": {"resumed": 1}},
            )
            if got.modified_count:
                return {**cand, **grab, "resumed": cand.get("resumed", 0) + 1}
        return None

    async def checkpoint(self, job: Doc, lease_s: float, i: int, state: Doc, progress: str) -> bool:
        """Record an input's progress and renew the lease; False when the job is no longer
        this claim's (cancelled, or taken by another process after a lapse)."""
        got = await self.jobs.update_one(
            {"_id": job["_id"], "status": "in-progress", "claim": job["claim"]},
            {
                "$set": {
                    f"inputs.{i}.state": state,
                    "lease": now() + timedelta(seconds=lease_s),
                    "progress": progress,
                }
            },
        )
        return got.matched_count == 1

    async def finish(self, job: Doc, status: str, keep: timedelta, failure: Doc | None) -> bool:
        t = now()
        update: Doc = {"status": status, "finished": t, "expires": t + keep, "lease": None}
        if failure is not None:
            update["failure"] = failure
        got = await self.jobs.update_one(
            {"_id": job["_id"], "status": "in-progress", "claim": job["claim"]}, {"$set": update}
        )
        if got.matched_count == 1:
            await self.errors.update_many({"job": job["_id"]}, {"$set": {"expires": t + keep}})
        return got.matched_count == 1

    async def release(self, job: Doc) -> None:
        """A stopping process hands its job back at once (another takes it up)."""
        await self.jobs.update_one(
            {"_id": job["_id"], "status": "in-progress", "claim": job["claim"]},
            {"$set": {"lease": now()}},
        )

    async def delete(self, job_id: str) -> None:
        await self.jobs.delete_one({"_id": job_id})
        await self.errors.delete_many({"job": job_id})

    async def add_errors(
        self, job_id: str, rows: list[tuple[int, int, bytes]], expires: datetime
    ) -> None:
        for i, line, data in rows:
            # A batch that ran before, in a process that stopped before its checkpoint.
            with contextlib.suppress(DuplicateKeyError):
                await self.errors.insert_one(
                    {
                        "_id": f"{job_id}/{i}/{line}",
                        "job": job_id,
                        "input": i,
                        "line": line,
                        "data": data,
                        "expires": expires,
                    }
                )

    async def error_lines(self, job_id: str, i: int) -> AsyncIterator[bytes]:
        cursor = self.errors.find(
            {"job": job_id, "input": i}, {"data": 1}, max_time_ms=self.ms, batch_size=500
        ).sort([("line", ASCENDING)])
        try:
            async for doc in cursor:
                yield bytes(doc["data"]) + b"\n"
        finally:
            await cursor.close()
