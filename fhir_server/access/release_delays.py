"""A patient's own delay of a category of results ("show my pathology results after my
clinician has called me, or after 7 days"): `POST Patient/[id]/$result-delay` with
`category` (a code of profiles/access/release.json `patient_delays.categories`) and `days`
(1 to `patient_delays.max_days`; 0 withdraws the delay).

The request is kept as one `Basic` resource per patient (code `result-delay`, `subject` the
patient, one extension per category with its days), so the patient reads it back with a
plain search (`Basic?code=...|result-delay`). It is not a Consent: a Consent here is a proxy
grant (access/consent.py), and a delay grants nobody anything. It applies to the results
that become released after it is made: each gets a hold with the reason `patient-request`
expiring `days` later (release_workflow.py), which the clinician lifts after the call by
removing the hold (an update without it). Only the patient asks, for themselves.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from fhir_server import clock
from fhir_server.access.release import ReleaseTable, load_table
from fhir_server.errors import Forbidden, Issue, Unprocessable

if TYPE_CHECKING:
    from fhir_server.context import ServerContext
    from fhir_server.operations.registry import OperationCall
    from fhir_server.rest.messages import FhirRequest, FhirResponse

Doc = dict[str, Any]
CODE_SYSTEM = "https://mhs.example.org/fhir/CodeSystem/portal-preference"
CODE = "result-delay"
EXTENSION = "https://mhs.example.org/fhir/StructureDefinition/result-delay"


def basic_id(patient: str) -> str:
    """The id of a patient's delay resource: one per patient, found by a point lookup."""
    return "result-delay-" + hashlib.sha256(patient.encode()).hexdigest()[:24]


def delays_of(basic: Doc | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for ext in (basic or {}).get("extension") or []:
        if not isinstance(ext, dict) or ext.get("url") != EXTENSION:
            continue
        parts = {e.get("url"): e for e in ext.get("extension") or [] if isinstance(e, dict)}
        cat = (parts.get("category") or {}).get("valueCode")
        days = (parts.get("days") or {}).get("valueInteger")
        if isinstance(cat, str) and isinstance(days, int) and days > 0:
            out[cat] = days
    return out


def delay_resource(patient: str, delays: dict[str, int]) -> Doc:
    return {
        "resourceType": "Basic",
        "code": {"coding": [{"system": CODE_SYSTEM, "code": CODE}]},
        "subject": {"reference": patient},
        "created": clock.now().date().isoformat(),
        "extension": [
            {
                "url": EXTENSION,
                "extension": [
                    {"url": "category", "valueCode": cat},
                    {"url": "days", "valueInteger": days},
                ],
            }
            for cat, days in sorted(delays.items())
        ],
    }


async def delay_for(
    ctx: ServerContext,
    subject: str | None,
    table: ReleaseTable,
    rt: str,
    resource: Doc,
    memo: dict[Any, Any] | None = None,
) -> timedelta | None:
    """The longest delay the result's patient asked for among the result's categories
    (`memo`: the delays a transaction read already, by patient)."""
    if subject is None or not subject.startswith("Patient/"):
        return None
    cats = table.categories_of(rt, resource)
    if not cats:
        return None
    memo = {} if memo is None else memo
    asked = memo.get(("delays", subject))
    if asked is None:
        doc = await ctx.store.current("Basic", basic_id(subject))
        asked = memo[("delays", subject)] = delays_of((doc or {}).get("res"))
    days = max((asked[c] for c in cats if c in asked), default=0)
    return timedelta(days=min(days, table.max_delay.days)) if days else None


async def result_delay(ctx: ServerContext, req: FhirRequest, call: OperationCall) -> FhirResponse:
    from fhir_server.rest import interactions  # the read path (an import loop at module level)

    assert call.rid is not None
    table = load_table()
    patient = f"Patient/{call.rid}"
    await interactions.read_visible(ctx, req, "Patient", call.rid)  # hidden or missing: 404
    auth = req.policy.auth
    if auth is not None and auth.fhir_user != patient:
        raise Forbidden("only the patient asks for a delay of their own results")
    category, days = call.params.get("category"), call.params.get("days")
    if category not in table.categories:
        raise Unprocessable(
            f"category must be one of {sorted(table.categories)}",
            code="code-invalid",
            issues=[Issue("code-invalid", f"category must be one of {sorted(table.categories)}")],
        )
    if not isinstance(days, int) or not 0 <= days <= table.max_delay.days:
        text = f"days must be 0 (no delay) to {table.max_delay.days}"
        raise Unprocessable(text, code="value", issues=[Issue("value", text)])
    rid = basic_id(patient)
    current = await ctx.store.current("Basic", rid, session=req.session)
    delays = delays_of((current or {}).get("res"))
    if days:
        delays[str(category)] = days
    else:
        delays.pop(str(category), None)
    written = await ctx.store.update(
        "Basic", rid, delay_resource(patient, delays), session=req.session
    )
    return interactions.resource_response(ctx, written.version)
