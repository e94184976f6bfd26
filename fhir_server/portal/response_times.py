"""Response-time tracking of secure messages: a Task per patient message, done on reply.

DESIGN.md, "Portal workflows": "Task 'respond within 3 business days'". Each new message a
patient or proxy (`task.senders`) writes to a care team or pool (`task.owners`) gets, in the
same transaction as the message (portal/hooks.py, `after`), a Task
(https://hl7.org/fhir/R4/task.html): `status` requested, `intent` order, `code` the table's,
`focus` the message, `for` the patient, `requester` the sender, `owner` the team,
`authoredOn` now and `restriction.period` from `sent` to the due date, close of business of
the n-th business day after the day it was sent (calendar.py). A new message from a
responder (`task.responders`: a clinician, or the team itself) that answers in a thread
(`inResponseTo` a message, or `partOf` the thread's header) completes the thread's open
Tasks (`status` completed, `executionPeriod.end`, `output` the reply), in its transaction.

Overdue Tasks are a plain search on the custom parameter `due` (the table's
SearchParameter on `Task.restriction.period.end`, added to the registry here at start-up):
`Task?owner=CareTeam/X&status=requested&due=lt<now>`. R4's own `period` searches
`Task.executionPeriod`, when the work was done, which a requested Task does not have yet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pymongo.asynchronous.client_session import AsyncClientSession

from fhir_server.config import Settings
from fhir_server.portal.calendar import Calendar, parse_calendar
from fhir_server.portal.hooks import Workflow, WriteEvent
from fhir_server.search.execute import search_filter
from fhir_server.search.parse import parse_search
from fhir_server.search.registry import Registry, SearchParam
from fhir_server.storage.store import instant, now_utc

if TYPE_CHECKING:
    from fhir_server.context import ServerContext
    from fhir_server.rest.messages import FhirRequest
    from fhir_server.storage.store import Version

Doc = dict[str, Any]
TABLE = Path(__file__).resolve().parents[2] / "profiles" / "portal" / "response_times.json"
# https://hl7.org/fhir/R4/valueset-task-status.html
TASK_STATUSES = frozenset(
    {
        "draft",
        "requested",
        "received",
        "accepted",
        "rejected",
        "ready",
        "cancelled",
        "in-progress",
        "on-hold",
        "failed",
        "completed",
        "entered-in-error",
    }
)
# A message in one of these states was not sent (or was withdrawn): nothing to answer.
# https://hl7.org/fhir/R4/valueset-event-status.html
UNSENT = frozenset({"preparation", "not-done", "entered-in-error"})


@dataclass(frozen=True)
class ResponseRules:
    """The parsed table: which messages need an answer, by when, and who answers."""

    code: Doc
    business_days: int
    senders: frozenset[str]
    owners: frozenset[str]
    responders: frozenset[str]
    open_statuses: frozenset[str]
    calendar: Calendar
    search_parameter: Doc

    def due(self, sent: datetime) -> datetime:
        return self.calendar.due(sent, self.business_days)

    def owner_of(self, message: Doc) -> Doc | None:
        """The team or pool that owes an answer to `message`, or None when it needs none:
        it must be sent, carry a payload (a thread header has none) and come from a
        patient or proxy."""
        if message.get("status") in UNSENT or not message.get("payload"):
            return None
        if _type_of(message.get("sender")) not in self.senders:
            return None
        for r in message.get("recipient") or ():
            if _type_of(r) in self.owners:
                return {"reference": r["reference"]}
        return None

    def answers(self, message: Doc) -> bool:
        """Whether `message` is a responder's reply in a thread."""
        if (
            message.get("status") in UNSENT
            or _type_of(message.get("sender")) not in self.responders
        ):
            return False
        return bool(_communications(message, "inResponseTo") or _communications(message, "partOf"))

    def task_for(self, message: Doc, owner: Doc, now: datetime, fallback_sent: datetime) -> Doc:
        """The Task that tracks the answer to `message` (stored with its own id)."""
        sent = _instant(message.get("sent"), self.calendar) or fallback_sent
        patient = message.get("subject") or message.get("sender")
        task: Doc = {
            "resourceType": "Task",
            "status": "requested",
            "intent": "order",
            "priority": message.get("priority", "routine"),
            "code": {"coding": [self.code], "text": self.code.get("display", self.code["code"])},
            "focus": {"reference": f"Communication/{message['id']}"},
            "authoredOn": instant(now),
            "restriction": {
                "period": {"start": instant(sent), "end": instant(self.due(sent))},
            },
            "owner": owner,
        }
        if isinstance(patient, dict) and patient.get("reference"):
            task["for"] = {"reference": patient["reference"]}
        if isinstance(message.get("sender"), dict) and message["sender"].get("reference"):
            task["requester"] = {"reference": message["sender"]["reference"]}
        return task


def completed(task: Doc, reply: Doc, at: datetime) -> Doc:
    """`task` done by `reply` (https://hl7.org/fhir/R4/task.html#statemachine)."""
    out = {k: v for k, v in task.items() if k != "meta"}
    period = dict(out.get("executionPeriod") or {})
    period.setdefault("start", instant(at))
    period["end"] = instant(at)
    out["status"] = "completed"
    out["executionPeriod"] = period
    out["output"] = [
        *(out.get("output") or ()),
        {
            "type": {"text": "reply"},
            "valueReference": {"reference": f"Communication/{reply['id']}"},
        },
    ]
    return out


def _type_of(ref: Any) -> str | None:
    if not isinstance(ref, dict) or not isinstance(ref.get("reference"), str):
        return None
    parts = ref["reference"].split("/")
    return parts[-2] if len(parts) >= 2 else None


def _communications(message: Doc, element: str) -> list[str]:
    return [
        r["reference"]
        for r in message.get(element) or ()
        if _type_of(r) == "Communication" and "/_history/" not in r["reference"]
    ]


def _instant(value: Any, cal: Calendar) -> datetime | None:
    """A FHIR dateTime as an aware datetime; a date alone is midnight clinic time."""
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=cal.zone)


def _types(raw: Any, where: str, known: frozenset[str] | None) -> frozenset[str]:
    if not isinstance(raw, list) or not raw or not all(isinstance(t, str) for t in raw):
        raise ValueError(f"response_times.json: {where} must list resource types")
    if known is not None and (unknown := set(raw) - known):
        raise ValueError(f"response_times.json: {where}: unknown types {sorted(unknown)}")
    return frozenset(raw)


def parse_table(raw: Any, known_types: frozenset[str] | None = None) -> ResponseRules:
    """The table as frozen rules, or ValueError saying what is wrong or contradictory."""
    if not isinstance(raw, dict) or set(raw) - {"note", "task", "calendar", "search_parameter"}:
        raise ValueError("response_times.json: expected note, task, calendar, search_parameter")
    task = raw.get("task")
    if not isinstance(task, dict):
        raise ValueError("response_times.json: task must be an object")
    code = task.get("code")
    if not isinstance(code, dict) or not code.get("system") or not code.get("code"):
        raise ValueError("response_times.json: task.code needs a system and a code")
    days = task.get("business_days")
    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= 60:
        raise ValueError("response_times.json: task.business_days must be 1-60")
    senders = _types(task.get("senders"), "task.senders", known_types)
    owners = _types(task.get("owners"), "task.owners", known_types)
    responders = _types(task.get("responders"), "task.responders", known_types)
    if senders & responders:
        raise ValueError(
            "response_times.json: a sender type may not also answer its own messages: "
            f"{sorted(senders & responders)}"
        )
    statuses = task.get("open_statuses")
    if not isinstance(statuses, list) or not set(statuses) <= TASK_STATUSES:
        raise ValueError("response_times.json: task.open_statuses must be R4 Task statuses")
    if "requested" not in statuses or "completed" in statuses:
        raise ValueError(
            "response_times.json: a new Task (requested) must be open, a completed one not"
        )
    calendar = parse_calendar(raw.get("calendar"), "response_times.json: calendar")
    sp = raw.get("search_parameter")
    if not isinstance(sp, dict) or sp.get("resourceType") != "SearchParameter":
        raise ValueError("response_times.json: search_parameter must be a SearchParameter")
    param = SearchParam.from_resource(sp)
    if param.base != ("Task",) or param.type != "date":
        raise ValueError("response_times.json: search_parameter is a date parameter on Task")
    return ResponseRules(
        code={k: code[k] for k in ("system", "code", "display") if k in code},
        business_days=days,
        senders=senders,
        owners=owners,
        responders=responders,
        open_statuses=frozenset(statuses),
        calendar=calendar,
        search_parameter=sp,
    )


@lru_cache(maxsize=4)
def load_table(path: Path = TABLE, known_types: frozenset[str] | None = None) -> ResponseRules:
    return parse_table(json.loads(path.read_text()), known_types)


async def _open_tasks(
    ctx: ServerContext, reply: Doc, rules: ResponseRules, session: AsyncClientSession | None
) -> list[Doc]:
    """The open Tasks of the thread `reply` answers: the Tasks whose focus is a message it
    answers, the thread's header or any message of that thread."""
    answered = set(_communications(reply, "inResponseTo"))
    headers = set(_communications(reply, "partOf"))
    store, reg = ctx.store, ctx.registry
    if answered:
        # The answered messages' own thread (a reply may name only the message).
        docs = await store.find(
            {"_id": {"$in": sorted(answered)}}, {"res.partOf": 1}, session=session
        )
        for d in docs:
            headers |= set(_communications(d.get("res") or {}, "partOf"))
    messages = answered | headers
    if headers:
        req = parse_search("Communication", [("part-of", ",".join(sorted(headers)))], reg)
        docs = await store.find(await search_filter(store, reg, req), {"id": 1}, session=session)
        messages |= {f"Communication/{d['id']}" for d in docs}
    if not messages:
        return []
    req = parse_search("Task", [("focus", ",".join(sorted(messages)))], reg)
    docs = await store.find(await search_filter(store, reg, req), None, session=session)
    code = (rules.code["system"], rules.code["code"])
    return [
        d
        for d in docs
        if (d.get("res") or {}).get("status") in rules.open_statuses
        and any(
            (c.get("system"), c.get("code")) == code
            for c in ((d["res"].get("code") or {}).get("coding") or ())
        )
    ]


def workflow(settings: Settings, registry: Registry) -> Workflow:
    """The response-time workflow; a malformed table stops start-up here, and the table's
    `due` SearchParameter joins the registry as any custom SearchParameter does."""
    from fhir_server.validation import KNOWN_RESOURCE_TYPES

    rules = load_table(known_types=KNOWN_RESOURCE_TYPES)
    registry.add(rules.search_parameter)

    async def after(
        ctx: ServerContext,
        req: FhirRequest,
        event: WriteEvent,
        version: Version,
        session: AsyncClientSession | None,
    ) -> None:
        message = version.resource
        if event.old is not None or message is None:
            return  # only a new message asks for, or gives, an answer
        now = now_utc()
        owner = rules.owner_of(message)
        if owner is not None:
            task = rules.task_for(message, owner, now, version.lu)
            ctx.validator.validate(task)
            await ctx.store.create("Task", task, session=session)
            return
        if not rules.answers(message):
            return
        at = _instant(message.get("sent"), rules.calendar) or now
        for doc in await _open_tasks(ctx, message, rules, session):
            done = completed(doc["res"], message, at)
            await ctx.store.update(
                "Task", doc["id"], done, if_match=int(doc["vid"]), session=session
            )

    return Workflow("response-times", frozenset({"Communication"}), after=after)


def due_date(sent: datetime, rules: ResponseRules | None = None) -> datetime:
    """The due date of a message sent at `sent` under the table (for the seed and docs)."""
    return (rules or load_table()).due(sent)
