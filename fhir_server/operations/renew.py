"""`MedicationRequest/[id]/$renew`: a renewal request for an expired prescription or one
with no refills left, reviewed by the patient's PCM (docs/portal.md, "Prescriptions"); the
work is in fhir_server/portal/prescriptions/operations.py."""

from __future__ import annotations

from fhir_server.context import ServerContext
from fhir_server.operations.registry import Operation, OperationCall, Parameter
from fhir_server.portal.prescriptions import operations
from fhir_server.rest.messages import FhirRequest, FhirResponse


async def handle(ctx: ServerContext, req: FhirRequest, call: OperationCall) -> FhirResponse:
    assert call.rid is not None
    return await operations.renew(ctx, req, call.rid, call.params.get("note"))


OPERATION = Operation(
    name="renew",
    id="MedicationRequest-renew",
    levels=frozenset({"instance"}),
    types=frozenset({"MedicationRequest"}),
    methods=frozenset({"POST"}),
    interaction="read",
    parameters=(
        Parameter("note", "string", documentation="A note for the care team."),
        Parameter("return", "Task", min=1, use="out"),
    ),
    handler=handle,
    title="Request a renewal",
    description="Creates a MedicationRequest with intent proposal (priorPrescription this "
    "one) and a Task for the patient's PCM to review it, in one transaction; 422 'request a "
    "refill instead' while the prescription can still be refilled.",
    affects_state=True,
)
