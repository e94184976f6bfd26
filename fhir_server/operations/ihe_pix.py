"""`Patient/$ihe-pix` (IHE PIXm, ITI-83 "Mobile Patient Identifier Cross-reference
Query"); the work is in fhir_server/exchange/identity/crosswalk.py."""

from __future__ import annotations

from fhir_server.context import ServerContext
from fhir_server.exchange.identity import crosswalk
from fhir_server.operations.registry import Operation, OperationCall, Parameter
from fhir_server.rest.messages import FhirRequest, FhirResponse


async def handle(ctx: ServerContext, req: FhirRequest, call: OperationCall) -> FhirResponse:
    source = str(call.params.get("sourceIdentifier"))
    targets = [str(t) for t in call.params.all("targetSystem")]
    body = await crosswalk.pix(ctx, req.policy, source, targets)
    return FhirResponse(status=200, body=body)


OPERATION = Operation(
    name="ihe-pix",
    id="Patient-ihe-pix",
    canonical="https://profiles.ihe.net/ITI/PIXm/OperationDefinition/IHE.PIXm.pix",
    levels=frozenset({"type"}),
    types=frozenset({"Patient"}),
    methods=frozenset({"GET", "POST"}),
    interaction="search",
    parameters=(
        Parameter(
            "sourceIdentifier",
            "token",
            min=1,
            documentation="The identifier known: system|value (a system of "
            "profiles/exchange/identifiers.json).",
        ),
        Parameter(
            "targetSystem",
            "uri",
            max="*",
            documentation="Only identifiers of these systems (each with its aliases); "
            "an unknown one is 403, as IHE PIXm says.",
        ),
        Parameter("targetIdentifier", "Identifier", max="*", use="out"),
        Parameter("targetId", "Reference", max="*", use="out"),
    ),
    handler=handle,
    title="Patient identifier cross-reference",
    description="The other identifiers of the person the sourceIdentifier names, through the "
    "Patients carrying it and their Patient.link (replaced-by, replaces, seealso, refer).",
)
