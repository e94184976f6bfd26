"""`[type]/$validate` and `[type]/[id]/$validate`
(https://hl7.org/fhir/R4/resource-operation-validate.html).

The resource is checked by the same validator and profiles as a write; the answer is an
OperationOutcome (200) whether or not it is valid. `mode=delete` asks whether the instance
could be deleted: a resource the request may not see answers exactly as a missing one.
"""

from __future__ import annotations

from typing import Any

from fhir_server.context import ServerContext
from fhir_server.errors import BadRequest
from fhir_server.operations.registry import Operation, OperationCall, Parameter
from fhir_server.rest.interactions import read_visible
from fhir_server.rest.messages import FhirRequest, FhirResponse

Doc = dict[str, Any]
MODES = ("create", "update", "delete")


def interaction(call: OperationCall) -> str:
    """The interaction the token needs (the `mode` parameter): a token may only ask whether
    it could write what it is allowed to write, so a token that may not create or update a
    type learns nothing from the validator either."""
    if call.params.get("mode") == "delete":
        return "delete"
    return "create" if call.rid is None else "update"


def _outcome(issues: list[Doc], call: OperationCall) -> FhirResponse:
    if not issues:
        issues = [
            {
                "severity": "information",
                "code": "informational",
                "diagnostics": "the resource is valid",
            }
        ]
    # Parameters `Prefer: handling=lenient` let through unread, said so.
    issues += [
        {"severity": "warning", "code": "informational", "diagnostics": f"ignored: {why}"}
        for _, _, why in call.params.dropped
    ]
    return FhirResponse(status=200, body={"resourceType": "OperationOutcome", "issue": issues})


async def validate(ctx: ServerContext, req: FhirRequest, call: OperationCall) -> FhirResponse:
    rt, rid = call.rt or "", call.rid
    if call.params.get("mode") == "delete":
        if rid is None:
            raise BadRequest("$validate mode=delete needs an instance")
        # Under the policy: a hidden resource validates exactly as a missing one.
        await read_visible(ctx, req, rt, rid)
        return _outcome([], call)
    body = call.params.get("resource")
    if not isinstance(body, dict):
        raise BadRequest("$validate needs a resource in the body", code="structure")
    if body.get("resourceType") != rt:
        raise BadRequest(f"the body holds a {body.get('resourceType')!r}, not a {rt!r}")
    if rid is not None and body.get("id") not in (None, rid):
        raise BadRequest(f"the body id {body.get('id')!r} differs from the URL id {rid!r}")
    issues = [i.to_json() for i in ctx.validator.check(body)]
    issues += [i.to_json() for i in ctx.validator.check_profiles(body)]
    return _outcome(issues, call)


OPERATION = Operation(
    name="validate",
    id="Resource-validate",
    canonical="http://hl7.org/fhir/OperationDefinition/Resource-validate",
    levels=frozenset({"type", "instance"}),
    types=None,
    methods=frozenset({"POST"}),
    interaction=interaction,
    parameters=(
        Parameter(
            "resource",
            "Resource",
            documentation="The resource to validate; the POST body may also be the resource "
            "itself. Not needed for mode=delete.",
        ),
        Parameter(
            "mode",
            "code",
            values=MODES,
            documentation="create (the default at type level), update (the default at "
            "instance level) or delete; the token needs that interaction on the type.",
        ),
        Parameter("return", "OperationOutcome", min=1, use="out"),
    ),
    handler=validate,
    title="Validate a resource",
    description="Checks a resource against the R4 definitions and this server's profiles, "
    "without storing it.",
    unsupported=frozenset({"profile"}),
    body_parameter="resource",
)
