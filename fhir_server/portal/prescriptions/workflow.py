"""The prescriptions workflow (portal/hooks.py): the eligibility view on MedicationRequest,
and the steps on the refill and renewal Tasks that any write of them passes, so a plain
`POST Task` obeys what `$refill` and `$renew` do (operations.py).

Refill Task (the table's `refill.task_code`):
- created: `focus` an eligible MedicationRequest the caller sees, `owner` a pharmacy of a
  type the table allows (it must exist); the server sets `status` requested, `intent`
  order, `for` the prescription's patient and `authoredOn`; a patient-side caller must be
  one of the table's requester kinds. In the SAME transaction (`after`) the refill count
  beside the prescription (`wf.refills`) goes from what was read to one more, by a
  conditional write: of two parallel requests for the last refill one commits, the other
  answers 412/422 (operations.py retries once and answers 422).
- updated by the patient side: only to `cancelled` while open; a Task that leaves the open
  statuses without completing (cancelled, rejected, failed, entered-in-error) gives its
  refill back, in its transaction.
Renewal Task (`renewal.task_code`): `focus` a proposal MedicationRequest whose
`priorPrescription` is renewable; `owner` the patient's PCM (set by the server from the
care team). The PCM decides with plain writes (docs/portal.md): approving completes the Task
with `output` the new order (intent order, `priorPrescription` the old one), which marks the
proposal completed; declining sets the Task `rejected` with a `statusReason`, which marks
the proposal cancelled.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pymongo.asynchronous.client_session import AsyncClientSession

from fhir_server import clock
from fhir_server.access.family import reference
from fhir_server.config import Settings
from fhir_server.errors import Forbidden, NotFound, PreconditionFailed, Unprocessable
from fhir_server.portal.hooks import Workflow, WriteEvent
from fhir_server.portal.prescriptions import eligibility
from fhir_server.portal.prescriptions.table import MedicationRules, load_table
from fhir_server.storage.store import instant

if TYPE_CHECKING:
    from fhir_server.access.policy import AccessPolicy
    from fhir_server.context import ServerContext
    from fhir_server.rest.messages import FhirRequest
    from fhir_server.storage.store import Version

Doc = dict[str, Any]
NAME = "prescriptions"
MR = "MedicationRequest"
# Actor kinds of the write-rule table that act for the organisation, not the patient.
STAFF = frozenset({"clinician", "break-glass", "system"})
# Statuses that end a refill request without a fill: its refill is given back.
UNFILLED = frozenset({"cancelled", "rejected", "failed", "entered-in-error"})


def business_rule(text: str) -> Unprocessable:
    return Unprocessable(text, code="business-rule")


def patient_side(req: FhirRequest, compartments: list[str]) -> frozenset[str]:
    """The patient-side kinds the caller is on these compartments (empty: staff)."""
    if not req.policy.restricted:
        return frozenset()
    return frozenset(req.policy.writer_kinds(compartments)) - STAFF


async def prescription(ctx: ServerContext, req: FhirRequest, ref: str | None, *, what: str) -> Doc:
    """The current stored document of `MedicationRequest/<id>`, if the caller sees it."""
    if ref is None or not ref.startswith(f"{MR}/") or ref.count("/") != 1:
        raise business_rule(f"{what} must name a MedicationRequest (focus)")
    rid = ref.split("/", 1)[1]
    doc = await ctx.store.current(MR, rid, session=req.session)
    if doc is None or doc.get("res") is None:
        raise NotFound(f"{ref} is not known")
    if req.policy.restricted:
        seen = await ctx.store.find_visible(
            MR, rid, req.policy.read_filter(MR), session=req.session, fields={"_id": 1}
        )
        if seen is None:
            raise NotFound(f"{ref} is not known")
    return doc


def today() -> Any:
    return clock.now().date()


def refusal(rules: MedicationRules, result: eligibility.Eligibility, asked: str) -> Unprocessable:
    """The 422 for a prescription that cannot be refilled (asked="refill") or renewed."""
    why = rules.reasons[result.reason]
    if asked == "renew" and result.value == eligibility.REFILLABLE:
        return business_rule(
            "this prescription still has refills and is valid: request a refill instead"
        )
    return business_rule(
        f"this prescription cannot be {'refilled' if asked == 'refill' else 'renewed'}: {why}"
    )


async def open_tasks(
    ctx: ServerContext, task_rules: Any, focus: str, session: AsyncClientSession | None
) -> list[Doc]:
    """The open Tasks of one kind (refill or renewal) whose focus is `focus`."""
    docs = await ctx.store.find(
        {"rt": "Task", "ix.k": f"focus={focus}"},
        {"res": 1},
        session=session,
        what="The open prescription requests",
    )
    return [
        d["res"]
        for d in docs
        if d.get("res")
        and d["res"].get("status") in task_rules.open_statuses
        and task_rules.is_ours(d["res"])
    ]


def same_request(tasks: list[Doc], task: Doc) -> Doc | None:
    """The open refill request a new one repeats: same prescription, same pharmacy. A
    request for another pharmacy is a new one, which the count decides."""
    owner = reference(task.get("owner"))
    return next((t for t in tasks if reference(t.get("owner")) == owner), None)


async def _pharmacy(
    ctx: ServerContext, req: FhirRequest, rules: MedicationRules, task: Doc
) -> None:
    owner = reference(task.get("owner"))
    kind = (owner or "").split("/", 1)[0]
    if owner is None or kind not in rules.refill_owners or owner.count("/") != 1:
        raise business_rule(
            f"a refill request needs the pharmacy (owner: {' or '.join(sorted(rules.refill_owners))})"
        )
    if await ctx.store.current(kind, owner.split("/", 1)[1], session=req.session) is None:
        raise business_rule(f"the pharmacy {owner} is not known")


async def pcm_of(
    ctx: ServerContext, rules: MedicationRules, patient: str, session: AsyncClientSession | None
) -> str | None:
    """The patient's PCM: the participant of the patient's care team whose role is the
    table's `pcm_role` (server-side lookup, whatever the caller may read)."""
    docs = await ctx.store.find(
        {"rt": "CareTeam", "ix.k": f"subject={patient}"},
        {"res": 1},
        session=session,
        what="The patient's care team",
    )
    for d in docs:
        team = d.get("res") or {}
        if team.get("status") not in (None, "active"):
            continue
        for p in team.get("participant") or ():
            roles = [c for r in p.get("role") or () for c in (r.get("coding") or ())]
            if any((c.get("system"), c.get("code")) == rules.pcm_role for c in roles):
                member = reference(p.get("member"))
                if member and member.split("/", 1)[0] in ("Practitioner", "PractitionerRole"):
                    return member
    return None


async def _refill_before(
    ctx: ServerContext, req: FhirRequest, rules: MedicationRules, event: WriteEvent
) -> Doc:
    task = dict(event.new or {})
    if event.old is not None:
        if rules.refill.is_ours(event.old):
            _patient_update(req, rules.refill, event.old, task)
        return task
    doc = await prescription(ctx, req, reference(task.get("focus")), what="a refill request")
    mr = doc["res"]
    patient = reference(mr.get("subject"))
    kinds = patient_side(req, doc.get("comp") or [])
    if kinds and not kinds & rules.refill.requesters:
        raise Forbidden("this access may not request refills of the prescription")
    await _pharmacy(ctx, req, rules, task)
    focus = f"{MR}/{mr['id']}"
    existing = same_request(await open_tasks(ctx, rules.refill, focus, req.session), task)
    if existing is not None:
        raise business_rule(
            f"this refill is already requested: Task/{existing['id']} (use $refill to get it)"
        )
    result = eligibility.evaluate(rules, mr, eligibility.refills_used(doc), today())
    if result.value != eligibility.REFILLABLE:
        raise refusal(rules, result, "refill")
    if kinds:  # the server, not the patient, says what the request is
        task["status"] = "requested"
        task["intent"] = "order"
    if patient:
        task["for"] = {"reference": patient}
    task.setdefault("authoredOn", instant(clock.now()))
    return task


def _patient_update(req: FhirRequest, task_rules: Any, old: Doc, new: Doc) -> None:
    """A patient or proxy may only cancel their own open request; the rest is the staff's."""
    kinds = patient_side(req, [reference(old.get("for")) or ""])
    if not kinds:
        return
    strip = ("meta", "status", "statusReason", "text")
    same = {k: v for k, v in old.items() if k not in strip} == {
        k: v for k, v in new.items() if k not in strip
    }
    if not same or new.get("status") not in (old.get("status"), "cancelled"):
        raise business_rule("a patient may only cancel a prescription request (status cancelled)")
    if old.get("status") not in task_rules.open_statuses and new.get("status") != old.get("status"):
        raise business_rule("this request is closed; it can no longer be cancelled")


async def _refill_after(
    ctx: ServerContext,
    rules: MedicationRules,
    event: WriteEvent,
    session: AsyncClientSession | None,
) -> None:
    new = event.new or {}
    focus = reference(new.get("focus")) or ""
    if not focus.startswith(f"{MR}/"):
        return
    rid = focus.split("/", 1)[1]
    opened = event.old is None
    was_open = event.old is not None and event.old.get("status") in rules.refill.open_statuses
    given_back = was_open and new.get("status") in UNFILLED
    if not opened and not given_back:
        return
    doc = await ctx.store.current(MR, rid, session=session)
    if doc is None or doc.get("res") is None:
        raise business_rule(f"{focus} is not known")
    used = eligibility.refills_used(doc)
    if opened:
        # Read again inside the transaction: this count is what the conditional write holds.
        result = eligibility.evaluate(rules, doc["res"], used, today())
        if result.value != eligibility.REFILLABLE:
            raise refusal(rules, result, "refill")
        value = used + 1
    else:
        value = max(used - 1, 0)
    if not await ctx.store.set_workflow_field(
        MR, rid, eligibility.REFILLS, used, value, session=session
    ):
        raise PreconditionFailed(f"{focus} was refilled by another request meanwhile; retry")


async def _renewal_before(
    ctx: ServerContext, req: FhirRequest, rules: MedicationRules, event: WriteEvent
) -> Doc:
    task = dict(event.new or {})
    if event.old is not None:
        if rules.renewal.is_ours(event.old):
            _patient_update(req, rules.renewal, event.old, task)
            await _check_decision(ctx, req, event.old, task)
        return task
    proposal_doc = await prescription(
        ctx, req, reference(task.get("focus")), what="a renewal request"
    )
    proposal = proposal_doc["res"]
    if proposal.get("intent") != "proposal":
        raise business_rule("a renewal request's focus is the renewal proposal (intent proposal)")
    prior = reference(proposal.get("priorPrescription"))
    old_doc = await prescription(ctx, req, prior, what="the proposal's priorPrescription")
    await renewable(ctx, req, rules, old_doc)
    patient = reference(old_doc["res"].get("subject")) or ""
    kinds = patient_side(req, old_doc.get("comp") or [])
    if kinds and not kinds & rules.renewal.requesters:
        raise Forbidden("this access may not request renewals of the prescription")
    pcm = await pcm_of(ctx, rules, patient, req.session)
    if pcm is None:
        raise business_rule("the patient has no PCM on their care team to review a renewal")
    if kinds:
        task["status"] = "requested"
        task["intent"] = "order"
        task["owner"] = {"reference": pcm}
    task.setdefault("owner", {"reference": pcm})
    task["for"] = {"reference": patient}
    task.setdefault("authoredOn", instant(clock.now()))
    return task


async def renewable(ctx: ServerContext, req: FhirRequest, rules: MedicationRules, doc: Doc) -> None:
    """422 unless the prescription may be renewed today, and none is open for it."""
    result = eligibility.evaluate(rules, doc["res"], eligibility.refills_used(doc), today())
    if result.value != eligibility.RENEWABLE:
        raise refusal(rules, result, "renew")


async def _check_decision(ctx: ServerContext, req: FhirRequest, old: Doc, new: Doc) -> None:
    """Approving needs the new order as output; declining needs a reason."""
    if new.get("status") == old.get("status"):
        return
    if new.get("status") == "completed":
        outs = [reference(o.get("valueReference")) for o in new.get("output") or ()]
        orders = [o for o in outs if o and o.startswith(f"{MR}/")]
        if not orders:
            raise business_rule("approving a renewal names the new prescription (Task.output)")
        doc = await ctx.store.current(MR, orders[0].split("/", 1)[1], session=req.session)
        res = (doc or {}).get("res") or {}
        focus = await ctx.store.current(
            MR, (reference(old.get("focus")) or "/").split("/", 1)[1], session=req.session
        )
        prior = reference(((focus or {}).get("res") or {}).get("priorPrescription"))
        if res.get("intent") != "order" or reference(res.get("priorPrescription")) != prior:
            raise business_rule(
                "the new prescription must be an order whose priorPrescription is the renewed one"
            )
    if new.get("status") == "rejected" and not (new.get("statusReason") or {}).get("text"):
        raise business_rule("declining a renewal needs a reason (Task.statusReason.text)")


async def _renewal_after(
    ctx: ServerContext,
    rules: MedicationRules,
    event: WriteEvent,
    session: AsyncClientSession | None,
) -> None:
    """The PCM's decision closes the proposal, in the Task's transaction."""
    old, new = event.old, event.new or {}
    if old is None or old.get("status") == new.get("status"):
        return
    closing = {"completed": "completed", "rejected": "cancelled", "cancelled": "cancelled"}
    status = closing.get(str(new.get("status")))
    focus = reference(new.get("focus")) or ""
    if status is None or not focus.startswith(f"{MR}/"):
        return
    rid = focus.split("/", 1)[1]
    doc = await ctx.store.current(MR, rid, session=session)
    if doc is None or (doc.get("res") or {}).get("status") == status:
        return
    res = {k: v for k, v in doc["res"].items() if k != "meta"}
    res["status"] = status
    await ctx.store.update(MR, rid, res, if_match=int(doc["vid"]), session=session)


def workflow(settings: Settings, registry: Any) -> Workflow:
    """Build the workflow from profiles/portal/medications.json (fail-fast)."""
    rules = load_table()

    def view(policy: AccessPolicy, resource: Doc, stored: Mapping[str, Any] | None) -> None:
        if resource.get("resourceType") == MR:  # the workflow's Task steps need no view
            eligibility.annotate(rules, resource, stored, today())

    async def before(ctx: ServerContext, req: FhirRequest, event: WriteEvent) -> Doc | None:
        new = event.new
        if event.rt != "Task" or new is None:
            return new
        if rules.refill.is_ours(new) or (event.old and rules.refill.is_ours(event.old)):
            return await _refill_before(ctx, req, rules, event)
        if rules.renewal.is_ours(new) or (event.old and rules.renewal.is_ours(event.old)):
            return await _renewal_before(ctx, req, rules, event)
        return new

    async def after(
        ctx: ServerContext,
        req: FhirRequest,
        event: WriteEvent,
        version: Version,
        session: AsyncClientSession | None,
    ) -> None:
        new = version.resource
        if event.rt != "Task" or new is None:
            return
        ev = WriteEvent(event.rt, event.rid, event.interaction, event.old, new)
        if rules.refill.is_ours(new):
            await _refill_after(ctx, rules, ev, session)
        elif rules.renewal.is_ours(new):
            await _renewal_after(ctx, rules, ev, session)

    return Workflow(NAME, frozenset({MR, "Task"}), before=before, after=after, view=view)
