"""`MedicationRequest/[id]/$refill`: a refill request for the prescription, to be picked up
at the chosen pharmacy (docs/portal.md, "Prescriptions"); the work is in
fhir_server/portal/prescriptions/operations.py."""

from __future__ import annotations

from fhir_server.context import ServerContext
from fhir_server.operations.registry import Operation, OperationCall, Parameter
from fhir_server.portal.prescriptions import operations
from fhir_server.rest.messages import FhirRequest, FhirResponse


async def handle(ctx: ServerContext, req: FhirRequest, call: OperationCall) -> FhirResponse:
    assert call.rid is not None
    return await operations.refill(ctx, req, call.rid, call.params.get("pharmacy"))


OPERATION = Operation(
    name="refill",
    id="MedicationRequest-refill",
    levels=frozenset({"instance"}),
    types=frozenset({"MedicationRequest"}),
    methods=frozenset({"POST"}),
    interaction="read",
    parameters=(
        Parameter(
            "pharmacy",
            "reference",
            min=1,
            documentation="The pharmacy to pick the refill up from: Location/<id> or "
            "Organization/<id>.",
        ),
        Parameter("return", "Task", min=1, use="out"),
    ),
    handler=handle,
    title="Request a refill",
    description="Creates a refill request Task (owner the pharmacy, focus the prescription) "
    "and counts the refill, in one transaction; 422 when the prescription cannot be refilled "
    "(the text says why, and when a renewal is the way); 200 with the open Task when a refill "
    "is already requested.",
    affects_state=True,
)
