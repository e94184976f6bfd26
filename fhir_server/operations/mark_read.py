"""`Communication/[id]/$mark-read`: a recipient sets `received` once (docs/portal.md,
"Operations"); the work is in fhir_server/portal/messaging/operations.py."""

from __future__ import annotations

from fhir_server.context import ServerContext
from fhir_server.operations.registry import Operation, OperationCall, Parameter
from fhir_server.portal.messaging import operations
from fhir_server.rest.messages import FhirRequest, FhirResponse


async def handle(ctx: ServerContext, req: FhirRequest, call: OperationCall) -> FhirResponse:
    assert call.rid is not None
    return await operations.mark_read(ctx, req, call.rid)


OPERATION = Operation(
    name="mark-read",
    id="Communication-mark-read",
    levels=frozenset({"instance"}),
    types=frozenset({"Communication"}),
    methods=frozenset({"POST"}),
    interaction="update",
    parameters=(Parameter("return", "Communication", min=1, use="out"),),
    handler=handle,
    title="Mark a message read",
    description="Sets Communication.received to now, once, for a recipient of the message; "
    "a second call answers the message unchanged.",
    affects_state=True,
)
