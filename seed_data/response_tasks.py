"""The response-time Tasks of the seed's secure messages (fhir_server/portal/response_times.py).

A message written through the server gets its Task from the workflow, in the message's
transaction; the seed writes its resources straight into the store, so it derives the same
Tasks here, by the same table and calendar (profiles/portal/response_times.json): one per
patient or proxy message to a care team or pool, completed at the first responder's reply
in its thread. A message with no reply that the team has read (`received`: a patient's
"thanks" after the answer) is closed on reading, as a clinician marks such a message done;
one neither answered nor read stays requested (the seed's overdue message, past its three
business days: `Task?status=requested&due=lt<now>`). Everything comes from the messages,
so the Tasks follow whatever threads seed_data/messaging.py builds.
"""

from __future__ import annotations

from datetime import datetime

from fhir_server.portal.response_times import ResponseRules, completed, load_table
from seed_data.common import Json


def _refs(message: Json, element: str) -> set[str]:
    return {r["reference"] for r in message.get(element) or () if r.get("reference")}


def _sent(message: Json) -> datetime:
    return datetime.fromisoformat(message["sent"])


def _reply(rules: ResponseRules, message: Json, messages: list[Json]) -> Json | None:
    """The first responder's message after `message` in its thread, if any."""
    ref = f"Communication/{message['id']}"
    thread = _refs(message, "partOf") or {ref}
    replies = [
        m
        for m in messages
        if rules.answers(m)
        and _sent(m) > _sent(message)
        and (ref in _refs(m, "inResponseTo") or thread & _refs(m, "partOf"))
    ]
    return min(replies, key=_sent, default=None)


def build(resources: list[Json]) -> list[Json]:
    rules = load_table()
    messages = [r for r in resources if r.get("resourceType") == "Communication" and r.get("sent")]
    tasks: list[Json] = []
    for m in messages:
        owner = rules.owner_of(m)
        if owner is None:
            continue
        sent = _sent(m)
        task = {"id": f"task-respond-{m['id']}", **rules.task_for(m, owner, sent, sent)}
        reply = _reply(rules, m, messages)
        if reply is not None:
            task = completed(task, reply, _sent(reply))
        elif m.get("received"):
            task = completed(task, m, datetime.fromisoformat(m["received"]))
            task.pop("output")
        tasks.append(task)
    return tasks


def added(resources: list[Json]) -> list[Json]:
    """`resources` and their messages' Tasks."""
    return [*resources, *build(resources)]
