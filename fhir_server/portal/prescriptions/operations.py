"""`MedicationRequest/[id]/$refill` and `MedicationRequest/[id]/$renew`, framework-free
(the registry rows are in fhir_server/operations/refill.py and renew.py).

Both build the resources a plain client would POST and write them through the one write
path under the caller's token (rest/interactions.py), so the workflow's steps (workflow.py)
and the write rules decide exactly as they do for `POST Task`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fhir_server.db.transactions import own_transaction
from fhir_server.errors import BadRequest, PreconditionFailed
from fhir_server.portal.prescriptions import eligibility
from fhir_server.portal.prescriptions.table import load_table
from fhir_server.portal.prescriptions.workflow import (
    MR,
    business_rule,
    open_tasks,
    prescription,
    refusal,
    same_request,
    today,
)
from fhir_server.rest import interactions
from fhir_server.rest.messages import FhirRequest, FhirResponse

if TYPE_CHECKING:
    from fhir_server.context import ServerContext

Doc = dict[str, Any]
# A request that lost the race for the count is tried once more: it then sees the count
# the winner left and answers as that count says (422 when it was the last refill).
ATTEMPTS = 3


def _sub(req: FhirRequest, method: str, path: list[str], body: Doc | None) -> FhirRequest:
    return FhirRequest(
        method=method,
        path=path,
        body=body,
        session=req.session,
        in_bundle=req.in_bundle,
        policy=req.policy,
        headers={"prefer": "return=representation"},
    )


async def _current_task(ctx: ServerContext, req: FhirRequest, tid: str) -> FhirResponse:
    version = await interactions.read_visible(ctx, req, "Task", tid)
    return interactions.resource_response(ctx, version)


async def refill(
    ctx: ServerContext, req: FhirRequest, rid: str, pharmacy: str | None
) -> FhirResponse:
    """A refill request Task for the prescription, picked up at `pharmacy`: 201 with the
    new Task, 200 with the open one when a refill is already requested."""
    rules = load_table()
    if not pharmacy:
        raise BadRequest(
            "$refill needs the parameter 'pharmacy' (Location/<id> or Organization/<id>)",
            code="required",
        )
    focus = f"{MR}/{rid}"
    for attempt in range(ATTEMPTS):
        doc = await prescription(ctx, req, focus, what="$refill")
        asked = {"owner": {"reference": pharmacy}}
        existing = same_request(await open_tasks(ctx, rules.refill, focus, req.session), asked)
        if existing is not None:
            return await _current_task(ctx, req, str(existing["id"]))
        result = eligibility.evaluate(rules, doc["res"], eligibility.refills_used(doc), today())
        if result.value != eligibility.REFILLABLE:
            raise refusal(rules, result, "refill")
        task = {
            "resourceType": "Task",
            "status": "requested",
            "intent": "order",
            "code": rules.refill.code_concept(),
            "focus": {"reference": focus},
            "for": doc["res"].get("subject"),
            "owner": {"reference": pharmacy},
        }
        try:
            return await interactions.create(ctx, _sub(req, "POST", ["Task"], task), "Task")
        except PreconditionFailed:
            if req.session is not None or attempt == ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


async def renew(ctx: ServerContext, req: FhirRequest, rid: str, note: str | None) -> FhirResponse:
    """A renewal proposal (MedicationRequest intent proposal, `priorPrescription` this one)
    and its review Task for the patient's PCM, in one transaction; 201 with the Task, 200
    with the open one when a renewal is already requested."""
    rules = load_table()
    focus = f"{MR}/{rid}"
    doc = await prescription(ctx, req, focus, what="$renew")
    old = doc["res"]
    result = eligibility.evaluate(rules, old, eligibility.refills_used(doc), today())
    if result.value != eligibility.RENEWABLE:
        raise refusal(rules, result, "renew")
    for p in await ctx.store.find(
        {"rt": MR, "ix.k": f"subject={(old.get('subject') or {}).get('reference')}"},
        {"res": 1},
        session=req.session,
        what="The open renewal proposals",
    ):
        res = p.get("res") or {}
        if (
            res.get("intent") == "proposal"
            and (res.get("priorPrescription") or {}).get("reference") == focus
        ):
            tasks = await open_tasks(ctx, rules.renewal, f"{MR}/{res['id']}", req.session)
            if tasks:
                return await _current_task(ctx, req, str(tasks[0]["id"]))
    proposal: Doc = {
        "resourceType": MR,
        "status": "active",
        "intent": "proposal",
        "subject": old.get("subject"),
        "priorPrescription": {"reference": focus},
        "authoredOn": today().isoformat(),
    }
    for k in (
        "medicationCodeableConcept",
        "medicationReference",
        "dosageInstruction",
        "reasonCode",
        "reasonReference",
    ):
        if k in old:
            proposal[k] = old[k]
    if note:
        proposal["note"] = [{"text": note}]
    if "medicationCodeableConcept" not in proposal and "medicationReference" not in proposal:
        raise business_rule("the prescription names no medication to renew")

    def conflict() -> Exception:
        return PreconditionFailed("the renewal conflicted with a concurrent request; retry")

    async with own_transaction(ctx.store.client, req, conflict) as s:
        sub = _sub(req, "POST", [MR], proposal)
        sub.session = s
        made = await interactions.create(ctx, sub, MR)
        assert made.body is not None
        task: Doc = {
            "resourceType": "Task",
            "status": "requested",
            "intent": "order",
            "code": rules.renewal.code_concept(),
            "focus": {"reference": f"{MR}/{made.body['id']}"},
            "for": old.get("subject"),
        }
        if note:
            task["note"] = [{"text": note}]
        tsub = _sub(req, "POST", ["Task"], task)
        tsub.session = s
        return await interactions.create(ctx, tsub, "Task")
