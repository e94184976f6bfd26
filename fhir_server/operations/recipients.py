"""`Communication/$recipients`: whom the caller may write to about a patient (docs/portal.md,
"Operations"); the work is in fhir_server/portal/messaging/operations.py."""

from __future__ import annotations

from fhir_server.context import ServerContext
from fhir_server.operations.registry import Operation, OperationCall, Parameter
from fhir_server.portal.messaging import operations
from fhir_server.rest.messages import FhirRequest, FhirResponse


async def handle(ctx: ServerContext, req: FhirRequest, call: OperationCall) -> FhirResponse:
    return await operations.recipients(
        ctx, req, call.params.get("patient"), call.params.get("name")
    )


OPERATION = Operation(
    name="recipients",
    id="Communication-recipients",
    levels=frozenset({"type"}),
    types=frozenset({"Communication"}),
    methods=frozenset({"GET", "POST"}),
    interaction="search",
    parameters=(
        Parameter(
            "patient",
            "reference",
            min=1,
            documentation="The patient the messages are about: `Patient/<id>` or its id.",
        ),
        Parameter(
            "name",
            "string",
            documentation="Words the recipient's name (or its clinic's) starts with, any case "
            "or accents: 'lakeside family medicine' finds the clinic's nurse pool.",
        ),
        Parameter("return", "Bundle", min=1, use="out"),
    ),
    handler=handle,
    title="Message recipients",
    description="A searchset of the care teams and nurse pools the caller may write to about "
    "the patient (profiles/portal/messaging.json, recipients).",
)
