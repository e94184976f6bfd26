"""Audit: one AuditEvent per FHIR interaction and per login, allowed or denied, in batches.

The events follow IHE Basic Audit Log Patterns (BALP,
https://profiles.ihe.net/ITI/BALP/) on the R4 AuditEvent
(https://hl7.org/fhir/R4/auditevent.html): `type` rest, `subtype` the restful interaction,
`action` C/R/U/D/E, `outcome` 0/4/8, agents (the user or client as requestor, the client
application, this server as source role), `source` the server, entities (the patients, the
resource addressed, the query as base64). A login is DICOM "User Authentication" (110114),
subtype Login (110122), with the login level.

Every event carries the confidentiality label R: an access log says which records exist and
who looked at them, so proxies and Basic logins never see it (docs/access.md); the patient
themself, clinicians and system clients do. An event about one resource also carries that
resource's sensitive labels (profiles/access/family.json), so it stays exactly as hidden as
the resource if the blanket R is ever lifted. Labels and patients are taken only from what
the caller was allowed to see (a successful answer): a denied or hidden request names only
what the caller typed.

Writes are buffered: `record` appends and never waits; a background task flushes at most
`batch` events per insert every `interval` seconds or as soon as a batch is full; `close`
flushes what is left at shutdown, within a time bound. The backlog is bounded: once
`max_pending` events wait (the database is down or behind), `full` is true and the load
shedder (fhir_server/rest/shedding.py) refuses every new request with 503 until it drains, so
nothing is served that cannot be audited and no request hangs on the log. Events of requests
already in flight are still kept (at most the in-flight limit more), never dropped for load.
A stop that cannot write what is left in time logs how many events it could not write.
Logins happen in the authorization server's worker threads: `record_threadsafe` hands their
events to the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from pymongo.errors import ConnectionFailure

from fhir_server.access.audit_privacy import names_sensitive_code
from fhir_server.access.family import load_table
from fhir_server.storage.store import ResourceStore, instant, new_id, now_utc

if TYPE_CHECKING:
    from fhir_server.devx.db_health import DatabaseHealth
    from fhir_server.rest.messages import FhirResponse

Doc = dict[str, Any]
log = logging.getLogger("fhir_server.audit")
# What this module records, named once (the store routes it to the audit log by it).
AUDIT_EVENT = "AuditEvent"

CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
INTERACTION = "http://hl7.org/fhir/restful-interaction"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
NETWORK_IP = "2"  # AuditEvent.agent.network.type: IP address
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
    # Set by `note_response` from a successful answer only (never from a hidden resource):
    # the resource answered (create: the new one), its patient compartments and its
    # sensitive labels, which the event copies so it is as hidden as the resource.
    target: str | None = None
    patients: list[str] = field(default_factory=list)
    labels: list[Doc] = field(default_factory=list)
    # A clinician's stated reason for breaking the glass (BALP purposeOfEvent BTG).
    break_glass_reason: str | None = None


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


def audit_event(rec: AuditRecord, *, label_all: bool = True) -> Doc:
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
        _client_agent(rec.client_id),
        _server_agent(),
    ]
    entities: list[Doc] = [_patient_entity(p) for p in _unique([rec.patient, *rec.patients])]
    target = _target(rec.path) if rec.target is None else rec.target
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
        "resourceType": AUDIT_EVENT,
        "meta": {"security": _security(rec.labels, label_all)},
        "type": {"system": EVENT_TYPE, "code": "rest", "display": "RESTful Operation"},
        "subtype": [{"system": INTERACTION, "code": code}],
        "action": ACTION.get(code, "E"),
        "recorded": instant(now_utc()),
        "outcome": _outcome(rec.status),
        "outcomeDesc": f"HTTP {rec.status}",
        **_purpose(rec.break_glass_reason),
        "agent": agents,
        "source": _source(),
        **({"entity": entities} if entities else {}),
    }


def audit_events(rec: AuditRecord, *, label_all: bool = True) -> list[Doc]:
    """The events of one request: one, or (when it names several patients, or its query a
    sensitive code) one for auditors and one per patient that shows that patient only what
    they may see (access/audit_privacy.py; docs/access.md, "Audit privacy")."""
    patients = _unique([rec.patient, *rec.patients])
    sensitive = bool(rec.query) and names_sensitive_code(rec.query)
    if len(patients) <= 1 and not sensitive:
        return [audit_event(rec, label_all=label_all)]
    target = rec.target or _target(rec.path)
    if target is not None and target.startswith("Patient/"):
        target = None  # the patients get events of their own; this one names none
    auditors = replace(rec, patient=None, patients=[], target=target or "")
    events = [audit_event(auditors, label_all=label_all)]
    requestor = rec.fhir_user
    for p in patients:
        if p == requestor:
            continue  # the auditors' event is in the requestor's compartment already
        own = replace(rec, patient=p, patients=[], query="", target=target or "")
        events.append(audit_event(own, label_all=label_all))
    return events


def _target(path: list[str]) -> str | None:
    if len(path) >= 2 and not path[1].startswith(("_", "$")) and path[0][:1].isupper():
        if len(path) == 4 and path[2] == "_history":
            return f"{path[0]}/{path[1]}/_history/{path[3]}"
        return f"{path[0]}/{path[1]}"
    return None


def _unique(refs: list[str | None]) -> list[str]:
    return list(dict.fromkeys(r for r in refs if r))


def _client_agent(client_id: str | None) -> Doc:
    return {
        "type": {"coding": [{"system": DCM, "code": "110153", "display": "Source Role ID"}]},
        "who": {"display": client_id or "unknown client"},
        "requestor": False,
    }


def _server_agent() -> Doc:
    return {
        "type": {"coding": [{"system": DCM, "code": "110152", "display": "Destination Role ID"}]},
        "who": {"display": SERVER},
        "requestor": False,
    }


def _source() -> Doc:
    return {
        "observer": {"display": SERVER},
        "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
    }


def _patient_entity(ref: str) -> Doc:
    # entity.what naming a Patient puts the event in that patient's compartment (the R4
    # AuditEvent `patient` search parameter), so "who looked at my record" finds it.
    return {
        "what": {"reference": ref},
        "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
        "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
    }


def _security(labels: list[Doc], label_all: bool) -> list[Doc]:
    out: list[Doc] = [{"system": CONFIDENTIALITY, "code": "R"}] if label_all else []
    seen = {(c["system"], c["code"]) for c in out}
    for c in labels:
        key = (c.get("system"), c.get("code"))
        if key not in seen:
            seen.add(key)
            out.append({"system": key[0], "code": key[1]})
    return out


def _purpose(reason: str | None) -> Doc:
    if reason is None:
        return {}
    coding = {"system": ACT_REASON, "code": "BTG", "display": "break the glass"}
    return {"purposeOfEvent": [{"coding": [coding], "text": reason}]}


def sensitive_labels(resource: Any) -> list[Doc]:
    """The resource's `meta.security` codings that profiles/access/family.json calls
    sensitive (the ones the policy hides), in their order."""
    meta = resource.get("meta") if isinstance(resource, dict) else None
    found = meta.get("security") if isinstance(meta, dict) else None
    wanted = set(load_table().labels)
    return [
        {"system": c["system"], "code": c["code"]}
        for c in found or []
        if isinstance(c, dict) and (c.get("system"), c.get("code")) in wanted
    ]


# Query parameters whose value names the patient a search is about (base name, no modifier).
PATIENT_PARAMS = frozenset({"patient", "subject", "beneficiary"})


def query_patients(path: list[str], params: list[tuple[str, str]]) -> list[str]:
    """The patients a search or operation names: `Patient/<id>/...`, `patient=`, a Patient
    `subject=`, `Patient?_id=`. Only the caller's own words: never a result of the query."""
    found: list[str | None] = []
    if len(path) >= 2 and path[0] == "Patient" and not path[1].startswith(("_", "$")):
        found.append(f"Patient/{path[1]}")
    for name, value in params:
        base, _, modifier = name.partition(":")
        if "." in base or modifier not in ("", "Patient"):
            continue  # a chain or a modifier (:missing, :not, :identifier): no patient id
        is_patient_id = base == "_id" and path[:1] == ["Patient"] and len(path) == 1
        if base not in PATIENT_PARAMS and not is_patient_id:
            continue
        for v in value.split(","):
            v = v.strip()
            if not v or "?" in v:
                continue
            if v.startswith("Patient/"):
                found.append(v)
            elif "/" not in v and (base in ("patient", "_id") or modifier == "Patient"):
                found.append(f"Patient/{v}")
    return _unique(found)[:20]


# Interactions that answer one resource: its labels and compartments go on the event.
ONE_RESOURCE = frozenset({"read", "vread", "create", "update", "patch", "delete"})


async def note_response(rec: AuditRecord, store: ResourceStore, resp: FhirResponse) -> None:
    """Fill in the resource, patients and labels of a successful answer (BALP entities) from
    the stored versions the interaction returned (`FhirResponse.versions`: their stored
    compartments, inherited ones included, and their sensitive labels), not by indexing the
    answer again or reading storage again.

    Only a 2xx answer that names a version counts: a hidden resource answers 404 (or, for a
    delete, a 204 without ETag), so nothing of it is ever copied onto the event, whose
    requester could otherwise see it in their own compartment. A write names the versions
    before and after it, so an update that drops a label does not unhide its event."""
    code = interaction(rec.method, rec.path)
    if rec.status >= 300 or code not in ONE_RESOURCE:
        return
    stored = [(v.comp, v.resource) for v in resp.versions]
    if code in ("read", "vread"):
        if stored:
            rec.labels = sensitive_labels(stored[0][1])  # the whole resource, not a summary
            rec.patients = list(stored[0][0])
        return
    if resp.location:
        rt, rid = resp.location.split("/")[:2]
        rec.target = f"{rt}/{rid}"
    elif code == "delete" and "etag" in {k.lower() for k in resp.headers} and len(rec.path) == 2:
        rt, rid = rec.path
    else:
        return
    if not stored:
        # A delete by a caller under no policy does not read what it deletes: the tombstone
        # and the version before it, from history.
        versions = await store.latest_versions(
            rt, rid, limit=2, projection={"comp": 1, "res.meta.security": 1}
        )
        stored = [(tuple(h.get("comp") or ()), h.get("res")) for h in versions]
    patients: list[str | None] = []
    labels: list[Doc] = []
    for comp, res in stored:
        patients += comp
        labels += sensitive_labels(res or {})
    rec.patients = _unique(patients)
    rec.labels = labels


def login_event(fields: Doc, *, label_all: bool = True) -> Doc:
    """The BALP "User Authentication" AuditEvent of one row of smart_auth's `auth_events`
    (success, failure or lockout). An unknown username is not copied: it may be a real
    user's mistyped name or password, and it names nobody who has an account."""
    outcome = str(fields.get("outcome", "failure"))
    known = bool(fields.get("account")) and bool(fields.get("fhirUser"))
    user = str(fields["fhirUser"]) if known else None
    lockout = outcome == "lockout"
    agent: Doc = {
        "type": {"coding": [{"system": PARTICIPATION, "code": "IRCP"}]},
        "who": {"reference": user} if user else {"display": "unknown user"},
        "requestor": True,
    }
    if known and fields.get("username"):
        agent["altId"] = str(fields["username"])
    if fields.get("ip"):
        agent["network"] = {"address": str(fields["ip"]), "type": NETWORK_IP}
    entities: list[Doc] = []
    if user and user.startswith("Patient/"):
        entities.append(_patient_entity(user))
    details = [
        {"type": name, "valueString": str(fields[key])}
        for name, key in (("login-level", "level"), ("method", "method"))
        if fields.get(key) and (known or key == "method")
    ]
    if user:
        entities.append(
            {
                "what": {"reference": user},
                "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                "role": {"system": OBJECT_ROLE, "code": "11", "display": "Security User Entity"},
                **({"detail": details} if details else {}),
            }
        )
    if lockout:
        kind = {"system": DCM, "code": "110113", "display": "Security Alert"}
        sub = {"system": DCM, "code": "110137", "display": "User Security Attributes Changed"}
        desc = "account locked after repeated failed logins"
    else:
        kind = {"system": DCM, "code": "110114", "display": "User Authentication"}
        sub = {"system": DCM, "code": "110122", "display": "Login"}
        reason = fields.get("reason") if known else None
        desc = "login succeeded" if outcome == "success" else "login failed"
        if fields.get("action") == "link":
            # Account linking (smart_auth/linking.py): the identity check after sign-in.
            desc = (
                "identity verified, account linked"
                if outcome == "success"
                else ("identity verification failed")
            )
        desc += f" ({reason})" if reason and outcome != "success" else ""
    return {
        "resourceType": AUDIT_EVENT,
        "meta": {"security": _security([], label_all)},
        "type": kind,
        "subtype": [sub],
        "action": "E",
        "recorded": instant(now_utc()),
        "outcome": "0" if outcome == "success" else "4",
        "outcomeDesc": desc,
        "agent": [agent, _client_agent(fields.get("client_id")), _server_agent()],
        "source": _source(),
        **({"entity": entities} if entities else {}),
    }


class AuditSink:
    """Buffers AuditEvents and writes them in bounded batches (see the module docstring)."""

    def __init__(
        self,
        store: ResourceStore,
        *,
        batch: int = 200,
        max_pending: int = 10_000,
        interval: float = 0.5,
        label_all: bool = True,
    ) -> None:
        self.store = store
        # The blanket confidentiality R on every event (docs/access.md, "Audit"); only a test
        # turns it off, to show that the copied labels alone hide what they must.
        self.label_all = label_all
        self._loop: asyncio.AbstractEventLoop | None = None
        self.batch = batch
        self.max_pending = max_pending
        self.interval = interval
        self.pending: list[Doc] = []
        self.written = 0
        # The process's view of the database (devx/db_health.py), set by the app: an
        # outage is one log line, however many flushes fail.
        self.db_health: DatabaseHealth | None = None
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def record(self, rec: AuditRecord) -> None:
        """Queue the event of one request; never raises into the request."""
        try:
            events = audit_events(rec, label_all=self.label_all)
            self.pending += [{**e, "id": new_id()} for e in events]
        except Exception:  # an audit bug must not fail the request; it must be seen
            log.exception("building an AuditEvent failed")
            return
        if len(self.pending) >= self.batch:
            self._wake.set()

    @property
    def full(self) -> bool:
        """The backlog is at its bound: new requests are refused until it drains."""
        return len(self.pending) >= self.max_pending

    def record_threadsafe(self, fields: Doc) -> None:
        """Queue the AuditEvent of one login (an `auth_events` row) from the authorization
        server's worker thread; the event loop owns `pending`, so the append runs there.
        Logins are few: no back-pressure is needed, the timer flushes them."""
        try:
            event = {**login_event(fields, label_all=self.label_all), "id": new_id()}
        except Exception:  # a login must not fail for an audit bug; it must be seen
            log.exception("building a login AuditEvent failed")
            return
        loop = self._loop
        if loop is None or loop.is_closed():
            self.pending.append(event)  # no loop (not started or stopped): close() flushes it
            return
        loop.call_soon_threadsafe(self.pending.append, event)

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
                except ConnectionFailure as exc:
                    # An outage: logged once per change of state, not per flush.
                    if self.db_health is not None:
                        self.db_health.failed(exc)
                    else:
                        log.warning("writing %d AuditEvents failed; kept for retry", len(chunk))
                    return
                except Exception:
                    log.exception("writing %d AuditEvents failed; kept for retry", len(chunk))
                    return
                del self.pending[: len(chunk)]
                self.written += len(chunk)

    async def _write(self, events: list[Doc]) -> None:
        # The audit log's store (storage/audit_store.py): one insert_many into its own
        # collection, in the document shape search reads, no history version. Ids are fixed
        # when the event is recorded, so a retried batch cannot write an event twice.
        log = self.store.for_type(AUDIT_EVENT)
        await log.insert_versions([log.document(AUDIT_EVENT, e["id"], 1, e) for e in events])

    async def close(self, timeout_s: float | None = None) -> None:
        """Stop the background task and write everything still buffered, giving up after
        `timeout_s` (the database may be gone): what is left is counted in the log."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flush(), timeout_s)
        if self.pending:
            log.error(
                "stopping with %d AuditEvents not written (the database did not take them)",
                len(self.pending),
            )
