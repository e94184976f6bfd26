"""Pre-visit clipboards: a QuestionnaireResponse is checked against its Questionnaire, and
answering it moves the patient's clipboard Task (issue 13 item 7; docs/portal.md,
"Clipboards").

The booking workflow creates the clipboard Task (`code` the table's, `for` the patient,
`focus` the Questionnaire, `owner` the patient). This workflow watches
QuestionnaireResponse on the one write path (portal/hooks.py):

- `before`: the response must answer a Questionnaire the writer may read (an unknown one is
  a 422 for a token-governed writer; a backend service may store answers to a Questionnaire
  held elsewhere, which then goes unchecked), and its answers must fit it
  (validation/questionnaire_response.py): in full for a `completed` or `amended` response,
  structure and answer types for a draft. A proxy's answers are recorded as the proxy's:
  `author` the RelatedPerson that stands for the token's user towards the subject (a parent
  of a child, the appointee of a Managed account), `source` who answered when left out.
- `after`, in the write's transaction: the subject's open clipboard Tasks that focus that
  Questionnaire move to `in-progress` (a draft) or `completed` with `output` the response.

Who may answer for whom is the write-rule table's (profiles/access/writes.json: a parent of
an adolescent writes no QuestionnaireResponse) and the family policy's; this module only
completes what they admitted.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pymongo.asynchronous.client_session import AsyncClientSession

from fhir_server.clock import now
from fhir_server.config import Settings
from fhir_server.errors import Issue, Unprocessable
from fhir_server.portal.hooks import Workflow, WriteEvent
from fhir_server.portal.response_times import TASK_STATUSES
from fhir_server.rest import searching
from fhir_server.rest.write_guard import caller_identities
from fhir_server.search.execute import search_filter
from fhir_server.search.parse import parse_search
from fhir_server.search.registry import Registry
from fhir_server.storage.store import instant
from fhir_server.validation import questionnaire_response as answers

if TYPE_CHECKING:
    from fhir_server.context import ServerContext
    from fhir_server.rest.messages import FhirRequest
    from fhir_server.storage.store import Version

Doc = dict[str, Any]
PORTAL = Path(__file__).resolve().parents[2] / "profiles" / "portal"
TABLE = PORTAL / "clipboards.json"
SCHEDULING = PORTAL / "scheduling.json"
# https://hl7.org/fhir/R4/valueset-questionnaire-answers-status.html
RESPONSE_STATUSES = frozenset(
    {"in-progress", "completed", "amended", "entered-in-error", "stopped"}
)
# An OperationOutcome lists this many findings at most: enough to fix a form, never a flood.
MAX_ISSUES = 50
_LITERAL = re.compile(r"^Questionnaire/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]+)?$")


@dataclass(frozen=True)
class ClipboardRules:
    code: Doc
    open_statuses: frozenset[str]
    output_type: Doc
    complete: frozenset[str]
    in_progress: frozenset[str]

    def task_status(self, response_status: Any) -> str | None:
        """What a response in `response_status` makes of its open clipboard Tasks."""
        if response_status in self.complete:
            return "completed"
        if response_status in self.in_progress:
            return "in-progress"
        return None

    def advanced(self, task: Doc, response_id: str, response_status: Any, at: str) -> Doc | None:
        """`task` moved on by the response, or None when it stays as it is
        (https://hl7.org/fhir/R4/task.html#statemachine)."""
        target = self.task_status(response_status)
        if target is None or task.get("status") not in self.open_statuses:
            return None
        if target == task.get("status"):
            return None
        out = {k: v for k, v in task.items() if k != "meta"}
        out["status"] = target
        out["lastModified"] = at
        if target == "completed":
            out["output"] = [
                *(out.get("output") or ()),
                {
                    "type": self.output_type,
                    "valueReference": {"reference": f"QuestionnaireResponse/{response_id}"},
                },
            ]
        return out


def _statuses(raw: Any, where: str, known: frozenset[str]) -> frozenset[str]:
    if not isinstance(raw, list) or not raw or not set(raw) <= known:
        raise ValueError(f"clipboards.json: {where} must list statuses of {sorted(known)}")
    return frozenset(raw)


def parse_table(raw: Any, scheduling: Any = None) -> ClipboardRules:
    """The table as frozen rules, or ValueError saying what is wrong or contradictory;
    `scheduling` is the booking table (its `clipboard_task`), when there is one."""
    if not isinstance(raw, dict) or set(raw) - {"note", "task", "responses"}:
        raise ValueError("clipboards.json: expected note, task, responses")
    task, responses = raw.get("task"), raw.get("responses")
    if not isinstance(task, dict) or not isinstance(responses, dict):
        raise ValueError("clipboards.json: task and responses must be objects")
    code = task.get("code")
    if not isinstance(code, dict) or not code.get("system") or not code.get("code"):
        raise ValueError("clipboards.json: task.code needs a system and a code")
    open_statuses = _statuses(task.get("open_statuses"), "task.open_statuses", TASK_STATUSES)
    if "requested" not in open_statuses or "completed" in open_statuses:
        raise ValueError("clipboards.json: a new Task (requested) is open, a completed one not")
    output_type = task.get("output_type")
    if not isinstance(output_type, dict) or not output_type:
        raise ValueError("clipboards.json: task.output_type must be a CodeableConcept")
    complete = _statuses(responses.get("complete"), "responses.complete", RESPONSE_STATUSES)
    progress = _statuses(responses.get("in_progress"), "responses.in_progress", RESPONSE_STATUSES)
    if complete & progress:
        raise ValueError(
            f"clipboards.json: a response status cannot both complete a Task and leave it "
            f"in progress: {sorted(complete & progress)}"
        )
    if "in-progress" not in open_statuses:
        raise ValueError("clipboards.json: a Task in progress must still be open")
    theirs = (scheduling or {}).get("clipboard_task", {}).get("code") if scheduling else None
    if theirs is not None and (
        not isinstance(theirs, dict)
        or (theirs.get("system"), theirs.get("code")) != (code["system"], code["code"])
    ):
        raise ValueError(
            "clipboards.json: task.code differs from scheduling.json clipboard_task.code: the "
            "Tasks booking creates would never be completed"
        )
    return ClipboardRules(
        code={k: code[k] for k in ("system", "code", "display") if k in code},
        open_statuses=open_statuses,
        output_type=output_type,
        complete=complete,
        in_progress=progress,
    )


@lru_cache(maxsize=4)
def load_table(path: Path = TABLE, scheduling: Path = SCHEDULING) -> ClipboardRules:
    other = json.loads(scheduling.read_text()) if scheduling.exists() else None
    return parse_table(json.loads(path.read_text()), other)


def _unprocessable(reason: str, expression: tuple[str, ...]) -> Unprocessable:
    return Unprocessable(
        reason, code="business-rule", issues=[Issue("business-rule", reason, expression=expression)]
    )


def _ref(node: Any) -> str | None:
    ref = node.get("reference") if isinstance(node, dict) else None
    return ref if isinstance(ref, str) else None


async def resolve_questionnaire(
    ctx: ServerContext, req: FhirRequest, canonical: str
) -> tuple[str, Doc] | None:
    """The Questionnaire (id, resource) a `questionnaire` canonical names, among those the
    request may read: by `url` (and `version` after a `|`), or a literal reference."""
    url, _, version = canonical.partition("|")
    criteria = [("url", url), *([("version", version)] if version else [])]
    ids = await _matches(ctx, req, criteria)
    if not ids:
        tail = url[len(ctx.base_url) + 1 :] if url.startswith(ctx.base_url + "/") else url
        m = _LITERAL.match(tail)
        if m is None:
            return None
        ids = [m.group(1)]
    filt = req.policy.read_filter("Questionnaire")
    doc = await ctx.store.find_visible("Questionnaire", ids[0], filt, session=req.session)
    res = (doc or {}).get("res")
    return (ids[0], res) if isinstance(res, dict) else None


async def _matches(
    ctx: ServerContext, req: FhirRequest, criteria: list[tuple[str, str]]
) -> list[str]:
    return await searching.conditional_matches(ctx, "Questionnaire", criteria, req)


async def _check(ctx: ServerContext, req: FhirRequest, qr: Doc, rules: ClipboardRules) -> None:
    restricted = req.policy.restricted
    canonical = qr.get("questionnaire")
    if not isinstance(canonical, str) or not canonical:
        if restricted and qr.get("item"):
            raise _unprocessable(
                "a QuestionnaireResponse with items must name its Questionnaire",
                ("QuestionnaireResponse.questionnaire",),
            )
        return
    found = await resolve_questionnaire(ctx, req, canonical)
    if found is None:
        if restricted:
            raise _unprocessable(
                f"QuestionnaireResponse.questionnaire {canonical!r} is not a known Questionnaire",
                ("QuestionnaireResponse.questionnaire",),
            )
        return
    qid, questionnaire = found
    findings = answers.check(qr, questionnaire, complete=qr.get("status") in rules.complete)
    if findings:
        shown = findings[:MAX_ISSUES]
        raise Unprocessable(
            f"the answers do not fit Questionnaire/{qid}: {shown[0].diagnostics}"
            + (f" (and {len(findings) - 1} more)" if len(findings) > 1 else ""),
            code=shown[0].code,
            issues=answers.issues(shown),
        )


async def _authorship(ctx: ServerContext, req: FhirRequest, qr: Doc) -> Doc:
    """A proxy's answers name the proxy as `author` (its RelatedPerson for the subject),
    apart from the subject; `source`, who answered, defaults to the author."""
    auth = req.policy.auth
    user = auth.fhir_user if auth is not None else None
    if auth is None or not isinstance(user, str) or not user.startswith("Patient/"):
        return qr
    subject = _ref(qr.get("subject"))
    author = _ref(qr.get("author"))
    out = dict(qr)
    if subject and author in (None, user) and (subject != user or auth.acr == "managed"):
        proxy = await _proxy_for(ctx, req, user, subject)
        if proxy is not None:
            out["author"] = {"reference": proxy}
    if "source" not in out and isinstance(out.get("author"), dict):
        out["source"] = dict(out["author"])
    return out


async def _proxy_for(ctx: ServerContext, req: FhirRequest, user: str, subject: str) -> str | None:
    """The one RelatedPerson of the token's user whose patient is `subject`, if any."""
    people = sorted(
        i for i in await caller_identities(ctx, req, user) if i.startswith("RelatedPerson/")
    )
    if not people:
        return None
    docs = await ctx.store.find({"_id": {"$in": people}}, {"res.patient": 1}, session=req.session)
    mine = [str(d["_id"]) for d in docs if _ref((d.get("res") or {}).get("patient")) == subject]
    return mine[0] if len(mine) == 1 else None


async def _open_tasks(
    ctx: ServerContext,
    patient: str,
    questionnaire: str,
    rules: ClipboardRules,
    session: AsyncClientSession | None,
) -> list[Doc]:
    """The patient's open clipboard Tasks for the Questionnaire."""
    reg = ctx.registry
    criteria = [
        ("patient", patient),
        ("code", f"{rules.code['system']}|{rules.code['code']}"),
        ("focus", questionnaire),
        ("status", ",".join(sorted(rules.open_statuses))),
    ]
    filt = await search_filter(ctx.store, reg, parse_search("Task", criteria, reg))
    return await ctx.store.find(filt, None, session=session)


def workflow(settings: Settings, registry: Registry) -> Workflow:
    """The clipboard workflow; a malformed or contradictory table stops start-up here."""
    rules = load_table()

    async def before(ctx: ServerContext, req: FhirRequest, event: WriteEvent) -> Doc | None:
        qr = event.new
        if qr is None:
            return qr
        if req.policy.restricted:
            qr = await _authorship(ctx, req, qr)
        await _check(ctx, req, qr, rules)
        return qr

    async def after(
        ctx: ServerContext,
        req: FhirRequest,
        event: WriteEvent,
        version: Version,
        session: AsyncClientSession | None,
    ) -> None:
        qr = version.resource
        if qr is None or rules.task_status(qr.get("status")) is None:
            return
        patient, canonical = _ref(qr.get("subject")), qr.get("questionnaire")
        if not patient or not patient.startswith("Patient/") or not isinstance(canonical, str):
            return
        found = await resolve_questionnaire(ctx, req, canonical)
        if found is None:
            return
        at = instant(now())
        for doc in await _open_tasks(ctx, patient, f"Questionnaire/{found[0]}", rules, session):
            moved = rules.advanced(doc["res"], version.id, qr.get("status"), at)
            if moved is None:
                continue
            ctx.validator.validate(moved)
            await ctx.store.update(
                "Task", doc["id"], moved, if_match=int(doc["vid"]), session=session
            )

    return Workflow("clipboards", frozenset({"QuestionnaireResponse"}), before=before, after=after)
