"""`Patient/$everything` and `Patient/[id]/$everything` on the operation table
(https://hl7.org/fhir/R4/patient-operation-everything.html); the work is in
fhir_server/exchange/everything.py."""

from __future__ import annotations

from dataclasses import replace

from fhir_server.context import ServerContext
from fhir_server.exchange.everything import everything
from fhir_server.exchange.everything_params import parse_params
from fhir_server.operations.params import lenient
from fhir_server.operations.registry import Operation, OperationCall, Parameter
from fhir_server.rest.messages import FhirRequest, FhirResponse


async def handle(ctx: ServerContext, req: FhirRequest, call: OperationCall) -> FhirResponse:
    # Formats and cardinality are checked by the table's parser; what is left (known types,
    # start before end, the cap on _count) is $everything's own.
    params = parse_params(call.params.pairs(), ctx.known_types, strict=not lenient(req))
    if call.params.dropped:
        params = replace(params, dropped=call.params.dropped + params.dropped)
    return await everything(ctx, req, call.rid, params)


OPERATION = Operation(
    name="everything",
    id="Patient-everything",
    canonical="http://hl7.org/fhir/OperationDefinition/Patient-everything",
    levels=frozenset({"type", "instance"}),
    types=frozenset({"Patient"}),
    methods=frozenset({"GET", "POST"}),
    interaction="search",
    parameters=(
        Parameter("start", "date", documentation="Care dates from (inclusive)."),
        Parameter("end", "date", documentation="Care dates up to (inclusive)."),
        Parameter("_since", "instant", documentation="Only resources changed after this."),
        Parameter("_type", "code", max="*", documentation="Resource types, comma-separated."),
        Parameter("_count", "integer", documentation="Page size (capped at 1000)."),
        Parameter(
            "_cursor",
            "string",
            documentation="Paging: the cursor of a `next` link, written by this server.",
        ),
        Parameter("return", "Bundle", min=1, use="out"),
    ),
    handler=handle,
    title="Everything about a patient",
    description="A searchset of the Patient(s) and their patient compartments, with the "
    "resources outside any compartment that they reference, narrowed by the access policy.",
)
