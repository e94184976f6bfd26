"""The booking operations as rows of the operation table (operations/registry.py); the work
is in operations.py. Parameter names follow the Argonaut Scheduling IG
(http://fhir.org/guides/argonaut/scheduling/: `$find` patient, service-type, location,
start, end, `$hold` / `$book` appointment) and IHE Scheduling (`_count`)."""

from __future__ import annotations

from fhir_server.context import ServerContext
from fhir_server.operations.registry import Operation, OperationCall, Parameter
from fhir_server.portal.scheduling import operations
from fhir_server.rest.messages import FhirRequest, FhirResponse

TYPES = frozenset({"Appointment"})
APPOINTMENT = Parameter(
    "appointment",
    "Resource",
    min=1,
    documentation="The Appointment: a proposed one from $find (or a held one, with its id).",
)
RETURN = Parameter("return", "Appointment", min=1, use="out")


async def _find(ctx: ServerContext, req: FhirRequest, call: OperationCall) -> FhirResponse:
    p = call.params
    return await operations.find(
        ctx, req, p.get("patient"), [str(v) for v in p.all("service-type")], p.get("location"),
        p.get("start"), p.get("end"), p.get("_count"),
    )  # fmt: skip


async def _hold(ctx: ServerContext, req: FhirRequest, call: OperationCall) -> FhirResponse:
    return await operations.hold(ctx, req, call.params.get("appointment"))


async def _book(ctx: ServerContext, req: FhirRequest, call: OperationCall) -> FhirResponse:
    return await operations.book(ctx, req, call.params.get("appointment"))


async def _cancel(ctx: ServerContext, req: FhirRequest, call: OperationCall) -> FhirResponse:
    assert call.rid is not None
    return await operations.cancel(ctx, req, call.rid, call.params.get("reason"))


async def _reschedule(ctx: ServerContext, req: FhirRequest, call: OperationCall) -> FhirResponse:
    assert call.rid is not None
    return await operations.reschedule(
        ctx, req, call.rid, call.params.get("appointment"), call.params.get("reason")
    )


REASON = Parameter("reason", "string", documentation="Why (a decline of a request needs one).")

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        name="find",
        id="Appointment-find",
        levels=frozenset({"type"}),
        types=TYPES,
        methods=frozenset({"GET", "POST"}),
        interaction="search",
        parameters=(
            Parameter("patient", "reference", min=1, documentation="The patient to book for."),
            Parameter(
                "service-type", "token", max="*", documentation="Visit type codes (system|code)."
            ),
            Parameter(
                "location",
                "reference",
                documentation="The clinic: one of its Locations or its Organization.",
            ),
            Parameter("start", "dateTime", documentation="Earliest start (default now)."),
            Parameter(
                "end", "dateTime", documentation="Latest start (default the longest horizon)."
            ),
            Parameter("_count", "integer", documentation="At most this many (default 50)."),
            Parameter("return", "Bundle", min=1, use="out"),
        ),
        handler=_find,
        title="Find appointments",
        description="Proposed Appointments built from the free Slots the clinic rules "
        "(profiles/portal/scheduling.json) let the caller book for the patient, soonest first.",
    ),
    Operation(
        name="hold",
        id="Appointment-hold",
        levels=frozenset({"type"}),
        types=TYPES,
        methods=frozenset({"POST"}),
        interaction="create",
        parameters=(APPOINTMENT, RETURN),
        handler=_hold,
        title="Hold an appointment",
        description="The Appointment becomes pending and its Slot busy-tentative for the visit "
        "type's hold time; an expired hold reads as free everywhere.",
        affects_state=True,
        body_parameter="appointment",
    ),
    Operation(
        name="book",
        id="Appointment-book",
        levels=frozenset({"type"}),
        types=TYPES,
        methods=frozenset({"POST"}),
        interaction="create",
        parameters=(APPOINTMENT, RETURN),
        handler=_book,
        title="Book an appointment",
        description="In one transaction the Appointment becomes booked and its Slot busy; 409 "
        "naming the Slot or the overlapping Appointment, 422 business-rule for the clinic rules.",
        affects_state=True,
        body_parameter="appointment",
    ),
    Operation(
        name="cancel",
        id="Appointment-cancel",
        levels=frozenset({"instance"}),
        types=TYPES,
        methods=frozenset({"POST"}),
        interaction="update",
        parameters=(REASON, RETURN),
        handler=_cancel,
        title="Cancel an appointment",
        description="Cancelled, its Slot freed and its clipboard Task cancelled in the same "
        "transaction; on a request: withdrawn by the patient, declined by the team.",
        affects_state=True,
    ),
    Operation(
        name="reschedule",
        id="Appointment-reschedule",
        levels=frozenset({"instance"}),
        types=TYPES,
        methods=frozenset({"POST"}),
        interaction="update",
        parameters=(APPOINTMENT, REASON, RETURN),
        handler=_reschedule,
        title="Reschedule an appointment",
        description="Cancels this booking and books the new Appointment in one transaction.",
        affects_state=True,
    ),
)
