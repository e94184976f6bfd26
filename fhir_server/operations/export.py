"""Bulk Data `$export` kick-off on the operation table, at its three levels
(Bulk Data Access IG 2.0.0: https://hl7.org/fhir/uv/bulkdata/export.html), and the status
and file URLs it owns. The work is in fhir_server/exchange/bulk_routes.py.

The token needs no one interaction for the whole call: types it may not search are left
out of an export that does not name them, and named ones answer 403 (bulk_routes `_types`),
so the table's `interaction` is "" and the handler checks each type.
"""

from __future__ import annotations

from fhir_server.context import ServerContext
from fhir_server.exchange import bulk_routes
from fhir_server.operations.registry import Operation, OperationCall, Parameter, Route
from fhir_server.rest.messages import FhirRequest, FhirResponse

BULK = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/"
# The export's level as bulk_routes names it, by the level of the call.
_LEVEL = {"system": "system", "type": "patient", "instance": "group"}


async def kickoff(ctx: ServerContext, req: FhirRequest, call: OperationCall) -> FhirResponse:
    dropped = tuple(why for _, _, why in call.params.dropped)
    return await bulk_routes.kickoff(
        ctx, req, _LEVEL[call.level], call.rid, call.params.pairs(), dropped
    )


_COMMON = (
    Parameter(
        "_outputFormat",
        "string",
        documentation="application/fhir+ndjson (also application/ndjson, ndjson).",
    ),
    Parameter("_since", "instant", documentation="Only resources changed after this."),
    Parameter("_type", "string", max="*", documentation="Resource types, comma-separated."),
    Parameter(
        "_elements",
        "string",
        max="*",
        documentation="Elements to keep ([type.]element, comma-separated); marked SUBSETTED.",
    ),
    Parameter(
        "_typeFilter",
        "string",
        max="*",
        documentation="Type?search-parameters selecting resources of one type.",
    ),
)
_PATIENT = Parameter(
    "patient",
    "reference",
    max="*",
    documentation="Patient/<id>: only these patients' compartments.",
)


def _operation(id_: str, level: str, types: frozenset[str] | None, title: str) -> Operation:
    params = _COMMON + ((_PATIENT,) if level != "system" else ())
    return Operation(
        name="export",
        id=id_,
        canonical=BULK + id_,
        levels=frozenset({level}),
        types=types,
        methods=frozenset({"GET", "POST"}),
        interaction="",
        parameters=params,
        handler=kickoff,
        title=title,
        description="Asynchronous (Prefer: respond-async): 202 with a status URL in "
        "Content-Location; files as ndjson, narrowed by the access policy.",
        unsupported=frozenset({"includeAssociatedData"}),
        # A HEAD must not start a job.
        answers_head=False,
    )


SYSTEM = _operation("export", "system", None, "Bulk Data export of the whole server")
PATIENT = _operation(
    "patient-export", "type", frozenset({"Patient"}), "Bulk Data export of all patients"
)
GROUP = _operation("group-export", "instance", frozenset({"Group"}), "Bulk Data export of a Group")
OPERATIONS = (SYSTEM, PATIENT, GROUP)
ROUTES = (Route(bulk_routes.STATUS, bulk_routes.route), Route(bulk_routes.FILE, bulk_routes.route))
