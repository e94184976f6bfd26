"""The export tasks a server process runs: started at kick-off, owned by the app.

Each job runs as one asyncio task in the process that accepted the kick-off, holding the
kick-off request's `AccessPolicy` (not serialisable, so never stored). At shutdown the app
cancels the tasks and marks their jobs failed; at start-up, jobs left in progress by a
process that died (stale heartbeat) are marked failed, with a message that says to kick off
again. Progress, results and failures go to MongoDB (`bulk_store.py`), where every process
reads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import TYPE_CHECKING, Any

from pymongo.errors import PyMongoError

from fhir_server.errors import FhirError, Issue, operation_outcome
from fhir_server.exchange.bulk_run import Cancelled, Job, run_export
from fhir_server.exchange.bulk_store import STALE, JobStore, now

if TYPE_CHECKING:
    from fhir_server.context import ServerContext

log = logging.getLogger("fhir_server.exchange")
SHUTDOWN = "the server shut down while the export ran; kick it off again"


class BulkExports:
    """Running export tasks of this process, by job id."""

    def __init__(self) -> None:
        # Identifies this process's jobs, so another process never claims them.
        self.worker = uuid.uuid4().hex
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.closing = False
        self.prepared = False

    def store(self, ctx: ServerContext) -> JobStore:
        return JobStore(ctx.store.db, ctx.settings.query_max_time_ms)

    async def prepare(self, ctx: ServerContext) -> None:
        """Indexes, then fail the jobs of processes that died (start-up)."""
        store = self.store(ctx)
        await store.ensure_indexes()
        failed = await store.recover(now() - STALE)
        if failed:
            log.warning("marked %d interrupted export job(s) failed", failed)
        self.prepared = True

    async def ensure(self, ctx: ServerContext) -> JobStore:
        store = self.store(ctx)
        if not self.prepared:
            await store.ensure_indexes()
            self.prepared = True
        return store

    def start(self, ctx: ServerContext, job: Job) -> None:
        task = asyncio.create_task(self._run(ctx, job), name=f"bulk-export-{job.id}")
        self.tasks[job.id] = task
        task.add_done_callback(lambda _t: self.tasks.pop(job.id, None))

    def cancel(self, job_id: str) -> None:
        task = self.tasks.get(job_id)
        if task is not None:
            task.cancel()

    async def _run(self, ctx: ServerContext, job: Job) -> None:
        store = self.store(ctx)
        try:
            await run_export(ctx.store.limited(ctx.settings.query_max_time_ms), store, job)
        except Cancelled:
            # Files written after the DELETE removed the rest; an unreachable database
            # leaves them to the TTL index.
            with contextlib.suppress(PyMongoError):
                await store.delete(job.id)
        except asyncio.CancelledError:
            if not self.closing:  # a DELETE; at shutdown `close` records the failure
                with contextlib.suppress(PyMongoError):
                    await store.delete(job.id)
            raise
        except FhirError as exc:
            await self._fail(store, job, exc.status, None, exc.outcome())
        except Exception:
            log.exception("export job %s failed", job.id)
            await self._fail(store, job, 500, "exception", "the export failed on the server")

    async def _fail(
        self, store: JobStore, job: Job, status: int, code: str | None, what: Any
    ) -> None:
        outcome = what if code is None else operation_outcome([Issue(code, what)])
        # The database may be what failed; the job then fails by its stale heartbeat.
        with contextlib.suppress(PyMongoError, TimeoutError):
            await asyncio.wait_for(store.fail(job.id, status, outcome, job.worker), timeout=5)

    async def close(self, ctx: ServerContext) -> None:
        """Cancel every running export (app shutdown) and mark their jobs failed. By job
        document, not by task: a task cancelled before its first step never runs its own
        handler."""
        self.closing = True
        tasks = list(self.tasks.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if not tasks:
            return
        outcome = operation_outcome([Issue("transient", SHUTDOWN)])
        # The database may be what is going away; the jobs then fail by stale heartbeat.
        with contextlib.suppress(PyMongoError, TimeoutError):
            await asyncio.wait_for(
                self.store(ctx).fail_worker(self.worker, 503, outcome), timeout=5
            )


def exports(ctx: ServerContext) -> BulkExports:
    """The process's export tasks (made on first use when the lifespan did not)."""
    if ctx.bulk is None:
        ctx.bulk = BulkExports()
    bulk: BulkExports = ctx.bulk
    return bulk
