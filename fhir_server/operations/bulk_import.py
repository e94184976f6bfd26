"""Bulk Data `$import` ("ping and pull") on the operation table, and the status and error
URLs it owns. The work is in fhir_server/exchange/imports/ (docs/exchange.md, "Imports
with Provenance"). The token must be a partner's backend-service token; the handler checks
each input type for create and update, so the table's `interaction` is ""."""

from __future__ import annotations

from fhir_server.exchange.imports import routes
from fhir_server.operations.registry import Operation, Parameter, Route

OPERATION = Operation(
    name="import",
    id="import",
    levels=frozenset({"system"}),
    types=None,
    methods=frozenset({"POST"}),
    interaction="",
    affects_state=True,
    parameters=(
        Parameter(
            "inputFormat",
            "code",
            min=1,
            documentation="application/fhir+ndjson (profiles/exchange/imports.json).",
        ),
        Parameter("inputSource", "uri", documentation="The partner's base URL (informational)."),
        Parameter(
            "storageDetail",
            "",
            parts=(
                Parameter(
                    "type", "code", min=1, documentation="https (or http outside production)."
                ),
            ),
        ),
        Parameter(
            "input",
            "",
            min=1,
            max="*",
            documentation="One NDJSON file: its resource type and URL, under a URL the client registered.",
            parts=(
                Parameter("type", "code", min=1, documentation="The file's resource type."),
                Parameter("url", "uri", min=1, documentation="Where the server pulls it from."),
            ),
        ),
    ),
    handler=routes.kickoff,
    title="Bulk Data import (ping and pull)",
    description="Asynchronous (Prefer: respond-async): 202 with a status URL; each resource "
    "validated, de-duplicated by identifier and stamped with a Provenance.",
)
ROUTES = (Route(routes.STATUS, routes.route), Route(routes.ERRORS, routes.route))
