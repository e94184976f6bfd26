"""Audit: one AuditEvent per FHIR interaction, allowed or denied, written in bounded batches.

The events follow IHE Basic Audit Log Patterns (BALP,
https://profiles.ihe.net/ITI/BALP/) on the R4 AuditEvent
(https://hl7.org/fhir/R4/auditevent.html): `type` rest, `subtype` the restful interaction,
`action` C/R/U/D/E, `outcome` 0/4/8, agents (the user or client as requestor, the client
application, this server as source role), `source` the server, entities (the patient, the
resource addressed, the query as base64).

Every event carries the confidentiality label R: an access log says which records exist and
who looked at them, so proxies and Basic logins never see it (docs/access.md); the patient
themself, clinicians and system clients do.

Writes are buffered: `record` appends (and, past `max_pending`, waits for a flush: audit is
never dropped for load); a background task flushes at most `batch` events per insert every
`interval` seconds or as soon as a batch is full; `close` flushes what is left at shutdown.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from pymongo.errors import BulkWriteError

from fhir_server.storage.store import ResourceStore, instant, new_id, now_utc

Doc = dict[str, Any]
log = logging.getLogger("fhir_server.audit")

CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
INTERACTION = "http://hl7.org/fhir/restful-interaction"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SERVER = "mhs-fhir-server"
# restful-interaction code -> AuditEvent.action
ACTION = {
    "read": "R",
    "vread": "R",
    "history-instance": "R",
    "history-type": "R",
    "history-system": "R",
    "search-type": "E",
    "search-system": "E",
    "search-compartment": "E",
    "create": "C",
    "update": "U",
    "patch": "U",
    "delete": "D",
    "batch": "E",
    "transaction": "E",
    "operation": "E",
}


@dataclass
class AuditRecord:
    """What the route knows of one request; filled in as the request goes."""

    method: str
    path: list[str]
    query: str = ""
    status: int = 500
    fhir_user: str | None = None
    client_id: str | None = None
    subject: str | None = None
    token_id: str | None = None
    patient: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def interaction(method: str, path: list[str]) -> str:
    """The restful-interaction code of a request (https://hl7.org/fhir/R4/http.html)."""
    n = len(path)
    if method in ("GET", "HEAD"):
        if n == 0:
            return "search-system"
        if path[-1] == "_history" or (n >= 2 and path[-2] == "_history"):
            if n == 4:
                return "vread"
            return {1: "history-system", 2: "history-type"}.get(n, "history-instance")
        if any(p.startswith("$") for p in path):
            return "operation"
        return {1: "search-type", 2: "read"}.get(n, "search-compartment")
    if method == "POST":
        if n == 0:
            return "transaction"
        if path[-1] == "_search":
            return "search-type" if n == 2 else "search-system"
        if any(p.startswith("$") for p in path):
            return "operation"
        return "create"
    if method == "PUT":
        return "update"
    if method == "PATCH":
        return "patch"
    if method == "DELETE":
        return "delete"
    return "operation"


def _outcome(status: int) -> str:
    if status < 400:
        return "0"
    return "4" if status < 500 else "8"


def audit_event(rec: AuditRecord) -> Doc:
    """The BALP-style AuditEvent of one request."""
    code = interaction(rec.method, rec.path)
    who: Doc = (
        {"reference": rec.fhir_user}
        if rec.fhir_user
        else {"identifier": {"value": rec.client_id or "anonymous"}}
    )
    agents: list[Doc] = [
        {
            "type": {"coding": [{"system": PARTICIPATION, "code": "IRCP"}]},
            "who": who,
            "requestor": True,
            **({"altId": rec.subject} if rec.subject else {}),
            **({"policy": [rec.token_id]} if rec.token_id else {}),
        },
        {
            "type": {"coding": [{"system": DCM, "code": "110153", "display": "Source Role ID"}]},
            "who": {"display": rec.client_id or "unknown client"},
            "requestor": False,
        },
        {
            "type": {
                "coding": [{"system": DCM, "code": "110152", "display": "Destination Role ID"}]
            },
            "who": {"display": SERVER},
            "requestor": False,
        },
    ]
    entities: list[Doc] = []
    if rec.patient:
        entities.append(
            {
                "what": {"reference": rec.patient},
                "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
                "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
            }
        )
    target = _target(rec.path)
    if target:
        entities.append(
            {
                "what": {"reference": target},
                "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                "role": {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
            }
        )
    if rec.query:
        entities.append(
            {
                "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                "role": {"system": OBJECT_ROLE, "code": "24", "display": "Query"},
                "query": base64.b64encode(rec.query.encode()).decode(),
            }
        )
    return {
        "resourceType": "AuditEvent",
        "meta": {"security": [{"system": CONFIDENTIALITY, "code": "R"}]},
        "type": {"system": EVENT_TYPE, "code": "rest", "display": "RESTful Operation"},
        "subtype": [{"system": INTERACTION, "code": code}],
        "action": ACTION.get(code, "E"),
        "recorded": instant(now_utc()),
        "outcome": _outcome(rec.status),
        "outcomeDesc": f"HTTP {rec.status}",
        "agent": agents,
        "source": {
            "observer": {"display": SERVER},
            "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
        },
        **({"entity": entities} if entities else {}),
    }


def _target(path: list[str]) -> str | None:
    if len(path) >= 2 and not path[1].startswith(("_", "$")) and path[0][:1].isupper():
        if len(path) == 4 and path[2] == "_history":
            return f"{path[0]}/{path[1]}/_history/{path[3]}"
        return f"{path[0]}/{path[1]}"
    return None


class AuditSink:
    """Buffers AuditEvents and writes them in bounded batches (see the module docstring)."""

    def __init__(
        self,
        store: ResourceStore,
        *,
        batch: int = 200,
        max_pending: int = 10_000,
        interval: float = 0.5,
    ) -> None:
        self.store = store
        self.batch = batch
        self.max_pending = max_pending
        self.interval = interval
        self.pending: list[Doc] = []
        self.written = 0
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def record(self, rec: AuditRecord) -> None:
        """Queue the event of one request; never raises into the request."""
        try:
            self.pending.append({**audit_event(rec), "id": new_id()})
        except Exception:  # an audit bug must not fail the request; it must be seen
            log.exception("building an AuditEvent failed")
            return
        if len(self.pending) >= self.batch:
            self._wake.set()
        if len(self.pending) >= self.max_pending:
            # Back-pressure rather than loss: the request waits for the log to drain.
            await self.flush()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            while self.pending:
                chunk = self.pending[: self.batch]
                try:
                    await self._write(chunk)
                except Exception:
                    log.exception("writing %d AuditEvents failed; kept for retry", len(chunk))
                    return
                del self.pending[: len(chunk)]
                self.written += len(chunk)

    async def _write(self, events: list[Doc]) -> None:
        # The store's own document shape (ix, comp, sk), so AuditEvents search like any other.
        docs = [self.store._document("AuditEvent", e["id"], 1, e) for e in events]
        hist = []
        for d in docs:
            h = {k: d[k] for k in ("rt", "id", "vid", "lu", "comp", "sk", "res")}
            h["_id"] = f"{d['_id']}/1"
            h["method"] = "POST"
            hist.append(h)
        # History first: a current version never exists without its history entry. Ids are
        # fixed when the event is recorded, so a retried batch cannot write an event twice.
        for col, batch in ((self.store.history, hist), (self.store.resources, docs)):
            try:
                await col.insert_many(batch, ordered=False)
            except BulkWriteError as exc:
                if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
                    raise

    async def close(self) -> None:
        """Stop the background task and write everything still buffered."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
