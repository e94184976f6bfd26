"""The import jobs a server process runs: taken by lease, so they survive a restart.

Every process polls for in-progress jobs whose lease has run out (`poll_s`), takes at most
`concurrency` at a time and runs each as an asyncio task. A new job is leased to the
process that accepted it and starts at once. The job's access policy is rebuilt from what
the kick-off token granted (its client and scope, kept in the job), so a job taken up by
another process writes under the same rules; a client disabled meanwhile stops its job at
the next batch (fhir-server clients disable).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
from pymongo.errors import PyMongoError

from fhir_server.access.policy import build_policy
from fhir_server.errors import Issue, operation_outcome
from fhir_server.exchange.imports.run import Lost, Stopped, run_input
from fhir_server.exchange.imports.store import ImportStore
from fhir_server.exchange.imports.table import ImportTable, load_table
from fhir_server.rest.messages import FhirRequest
from smart_auth import scopes as sc
from smart_auth.models import AuthContext

if TYPE_CHECKING:
    from fhir_server.context import ServerContext

log = logging.getLogger("fhir_server.exchange.imports")
Doc = dict[str, Any]
DISABLED = "the partner client was disabled; the import stopped"


async def partner_of(ctx: ServerContext, client_id: str) -> Doc | None:
    """The client's registration (the authorization server's `auth_clients`), if enabled."""
    doc: Doc | None = await ctx.store.db["auth_clients"].find_one(
        {"_id": client_id}, {"organization": 1, "import_urls": 1, "disabled": 1, "name": 1}
    )
    return None if doc is None or doc.get("disabled") else doc


async def job_request(ctx: ServerContext, job: Doc) -> FhirRequest:
    a = job["auth"]
    auth = AuthContext(
        subject=a["subject"],
        client_id=a["client_id"],
        scopes=tuple(sc.parse_scopes(a["scope"])),
        scope=a["scope"],
        token_id=a.get("token_id", ""),
        grant_id=a.get("grant_id", ""),
        expires_at=datetime.now(UTC) + timedelta(hours=1),
    )
    policy = await build_policy(ctx.store, ctx.policy_tables, auth, views=ctx.workflows.views)
    return FhirRequest(method="POST", path=["$import"], policy=policy)


class ImportJobs:
    def __init__(self, lease_s: float = 30.0, poll_s: float = 1.0, concurrency: int = 2) -> None:
        self.worker = uuid.uuid4().hex
        self.lease_s, self.poll_s, self.concurrency = lease_s, poll_s, concurrency
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.jobs: dict[str, Doc] = {}
        self.loop: asyncio.Task[None] | None = None
        self.prepared = False
        self.table: ImportTable = load_table()

    def store(self, ctx: ServerContext) -> ImportStore:
        return ImportStore(ctx.store.db, ctx.settings.query_max_time_ms)

    async def ensure(self, ctx: ServerContext) -> ImportStore:
        store = self.store(ctx)
        if not self.prepared:
            await store.ensure_indexes()
            self.prepared = True
        return store

    def start_polling(self, ctx: ServerContext) -> None:
        self.loop = asyncio.create_task(self._poll(ctx), name="import-jobs")

    async def _poll(self, ctx: ServerContext) -> None:
        while True:
            try:
                store = await self.ensure(ctx)
                while len(self.tasks) < self.concurrency:
                    job = await store.claim(self.lease_s, self.worker)
                    if job is None:
                        break
                    log.info("taking up import job %s", job["_id"])
                    self.run(ctx, job)
            except PyMongoError as exc:
                log.warning("import jobs: database unavailable (%s)", type(exc).__name__)
            await asyncio.sleep(self.poll_s)

    def run(self, ctx: ServerContext, job: Doc) -> None:
        task = asyncio.create_task(self._run(ctx, job), name=f"import-{job['_id']}")
        self.tasks[job["_id"]] = task
        self.jobs[job["_id"]] = job
        task.add_done_callback(
            lambda _t: (self.tasks.pop(job["_id"], None), self.jobs.pop(job["_id"], None))
        )

    async def _run(self, ctx: ServerContext, job: Doc) -> None:
        store = self.store(ctx)
        keep = timedelta(hours=self.table.keep_hours)
        try:
            req = await job_request(ctx, job)
            timeout = httpx.Timeout(self.table.fetch_timeout_s)
            async with httpx.AsyncClient(follow_redirects=False, timeout=timeout) as client:
                for i in range(len(job["inputs"])):
                    if await partner_of(ctx, job["partner"]["client"]) is None:
                        outcome = operation_outcome([Issue("forbidden", DISABLED)])
                        await store.finish(job, "failed", keep, {"status": 403, "outcome": outcome})
                        return
                    await run_input(ctx, store, self.table, job, i, req, self.lease_s, client)
            await store.finish(job, "completed", keep, None)
        except Lost:
            log.info("import job %s is no longer this process's", job["_id"])
        except Stopped:
            with contextlib.suppress(PyMongoError, TimeoutError):
                await asyncio.wait_for(store.release(job), timeout=2)
        except asyncio.CancelledError:
            with contextlib.suppress(PyMongoError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(store.release(job)), timeout=2)
            raise
        except Exception:
            log.exception("import job %s failed", job["_id"])
            outcome = operation_outcome([Issue("exception", "the import failed on the server")])
            with contextlib.suppress(PyMongoError):
                await store.finish(job, "failed", keep, {"status": 500, "outcome": outcome})

    def cancel(self, job_id: str) -> None:
        """Stop running the job here (a DELETE, or this process stopping)."""
        job = self.jobs.get(job_id)
        if job is not None:
            job["stop"] = True
        task = self.tasks.get(job_id)
        if task is not None:
            task.cancel()

    async def close(self) -> None:
        """Stop polling and hand running jobs back (their lease is released at once)."""
        if self.loop is not None:
            self.loop.cancel()
        tasks = list(self.tasks.values())
        for job_id in list(self.tasks):
            self.cancel(job_id)
        await asyncio.gather(*([self.loop] if self.loop else []), *tasks, return_exceptions=True)


def imports(ctx: ServerContext) -> ImportJobs:
    """The process's import jobs (made on first use when the lifespan did not)."""
    jobs = getattr(ctx, "imports", None)
    if jobs is None:
        jobs = ImportJobs(lease_s=float(ctx.settings.import_lease_s))
        ctx.imports = jobs
    assert isinstance(jobs, ImportJobs)
    return jobs
