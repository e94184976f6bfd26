"""`Subscription/[id]/$status` (Subscriptions R5 Backport,
http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-status).

A `searchset` Bundle holding the subscription's `backport-subscription-status-r4`
Parameters (`type: query-status`). Only the subscription's owner gets it: another user's
answers exactly as a missing one (fhir_server/notify/routes.py). The instance level only;
the type level (all of the caller's) is not offered.
"""

from __future__ import annotations

from fhir_server.context import ServerContext
from fhir_server.notify import backport
from fhir_server.notify.routes import status
from fhir_server.operations.registry import Operation, OperationCall, Parameter
from fhir_server.rest.messages import FhirRequest, FhirResponse


async def handle(ctx: ServerContext, req: FhirRequest, call: OperationCall) -> FhirResponse:
    assert call.rid is not None  # instance level only (the row's levels)
    return await status(ctx, req, call.rid)


OPERATION = Operation(
    name="status",
    id="Subscription-status",
    canonical=backport.STATUS_OPERATION,
    levels=frozenset({"instance"}),
    types=frozenset({"Subscription"}),
    methods=frozenset({"GET", "POST"}),
    interaction="read",
    parameters=(
        Parameter(
            "return",
            "Bundle",
            min=1,
            use="out",
            documentation="A searchset Bundle with the subscription's status Parameters.",
        ),
    ),
    handler=handle,
    title="Subscription status",
    description="The current status of one of the caller's own Subscriptions: status, "
    "topic, events since the subscription started, the last error.",
    # The backport's `id` and `status` inputs select subscriptions at the type level.
    unsupported=frozenset({"id", "status"}),
)
