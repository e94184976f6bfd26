"""`Patient/$match` (https://hl7.org/fhir/R4/patient-operation-match.html); the work is in
fhir_server/exchange/identity/match.py, the weights in profiles/exchange/matching.json."""

from __future__ import annotations

from fhir_server.context import ServerContext
from fhir_server.errors import BadRequest
from fhir_server.exchange.identity import match
from fhir_server.exchange.identity.table import matching
from fhir_server.operations.registry import Operation, OperationCall, Parameter
from fhir_server.rest.messages import FhirRequest, FhirResponse


async def handle(ctx: ServerContext, req: FhirRequest, call: OperationCall) -> FhirResponse:
    table = matching()
    given = call.params.get("resource")
    if not isinstance(given, dict) or given.get("resourceType") != match.PATIENT:
        raise BadRequest("Patient/$match needs a Patient in the 'resource' parameter")
    match.check_input(table, given)
    count = call.params.get("count")
    count = table.default_count if count is None else min(int(count), table.max_count)
    if count < 1:
        raise BadRequest("'count' must be at least 1")
    policy = req.policy
    found = await match.candidates(
        ctx, given, type_filter=policy.type_filter if policy.restricted else None, table=table
    )
    found = match.admitted(ctx, policy, found)
    chosen = match.select(
        found, only_certain=bool(call.params.get("onlyCertainMatches")), count=count
    )
    return FhirResponse(status=200, body=match.bundle(ctx.base_url, chosen))


OPERATION = Operation(
    name="match",
    id="Patient-match",
    canonical="http://hl7.org/fhir/OperationDefinition/Patient-match",
    levels=frozenset({"type"}),
    types=frozenset({"Patient"}),
    methods=frozenset({"POST"}),
    interaction="search",
    parameters=(
        Parameter(
            "resource",
            "Resource",
            min=1,
            documentation="The Patient to match: identifiers, name, birthDate, gender, "
            "address, telecom. It needs an identifier, or a family name and a birthDate.",
        ),
        Parameter(
            "onlyCertainMatches",
            "boolean",
            documentation="Only a certain match, and none when several are certain.",
        ),
        Parameter("count", "integer", documentation="At most this many matches (cap 50)."),
        Parameter("return", "Bundle", min=1, use="out"),
    ),
    handler=handle,
    title="Patient match",
    description="A searchset of the Patients the caller may see that match the input, best "
    "first, each with search.score and the match-grade extension (certain, probable, "
    "possible), from the weights of profiles/exchange/matching.json.",
)
