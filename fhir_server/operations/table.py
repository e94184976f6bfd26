"""The operation table: every operation this server offers, one module each.

rest/dispatch.py routes `$name` through it, the CapabilityStatement lists it, and
`OperationDefinition/[id]` serves its definitions (operations/definitions.py). To add an
operation, write its module with an `OPERATION` and list it here (docs/rest.md, "Operations").
"""

from __future__ import annotations

from fhir_server.notify import routes as subscriptions
from fhir_server.operations import (
    bulk_import,
    definitions,
    everything,
    export,
    ihe_pix,
    mark_read,
    match,
    recipients,
    refill,
    renew,
    result_delay,
    subscription_status,
    validate,
)
from fhir_server.operations.registry import Operation, OperationTable, Route
from fhir_server.portal.scheduling import ops as scheduling

OPERATIONS: tuple[Operation, ...] = (
    validate.OPERATION,
    *export.OPERATIONS,
    everything.OPERATION,
    recipients.OPERATION,
    mark_read.OPERATION,
    subscription_status.OPERATION,
    # The booking workflow (portal/scheduling): $find, $hold, $book, $cancel, $reschedule.
    *scheduling.OPERATIONS,
    # Bulk Data $import with Provenance (exchange/imports, issue 15 items 5-7).
    bulk_import.OPERATION,
    # results release (access/release_delays.py): a patient's own delay of a category.
    result_delay.OPERATION,
    # The prescriptions workflow (portal/prescriptions/).
    refill.OPERATION,
    renew.OPERATION,
    # Identity (exchange/identity/): patient matching and the identifier cross-walk.
    match.OPERATION,
    ihe_pix.OPERATION,
)

# URLs that belong to the table's operations without being operation calls, and the
# Subscriptions (their own collection, each its owner's: docs/portal.md, "Notifications";
# their `$status` goes through the operations above).
ROUTES: tuple[Route, ...] = (
    *export.ROUTES,
    definitions.ROUTE,
    Route(subscriptions.RT, subscriptions.route),
    # $import's status and error-file URLs.
    *bulk_import.ROUTES,
)

TABLE = OperationTable(OPERATIONS, ROUTES)
