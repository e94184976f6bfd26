"""Map a FhirRequest (method + path below the base) to its interaction.

The one routing table for HTTP requests and for batch/transaction entries alike.
URL patterns: https://hl7.org/fhir/R4/http.html#summary
"""

from __future__ import annotations

from fhir_server.capability import capability_statement
from fhir_server.context import ServerContext
from fhir_server.errors import BadRequest, MethodNotAllowed, NotFound
from fhir_server.operations.params import parse_params
from fhir_server.operations.registry import OperationCall
from fhir_server.rest import bundle, history, idempotency, interactions, searching
from fhir_server.rest.messages import FhirRequest, FhirResponse
from fhir_server.rest.render import dumps
from fhir_server.search.parse import IGNORED as RENDERING_PARAMS

# The scope interaction each method needs (https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html).
_TYPE_LEVEL = {"GET": "search", "POST": "create", "PUT": "update", "DELETE": "delete"}
_INSTANCE_LEVEL = {"GET": "read", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def _type(ctx: ServerContext, rt: str) -> str:
    if rt not in ctx.known_types:
        raise interactions.unknown_type(rt)
    return rt


def _not_allowed(req: FhirRequest) -> MethodNotAllowed:
    return MethodNotAllowed(f"{req.method} is not allowed on /{'/'.join(req.path)}")


def _append_only(ctx: ServerContext, req: FhirRequest, rt: str, method: str) -> None:
    """The audit log is written by the server alone (profiles/access/audit_log.json): a
    client's create, update, patch or delete of its type answers 405, in a bundle too."""
    if method != "GET" and ctx.store.for_type(rt) is not ctx.store:
        raise MethodNotAllowed(
            f"{rt} is recorded by the server itself; clients cannot {method} it",
            headers={"Allow": "GET"},
        )


async def dispatch(ctx: ServerContext, req: FhirRequest) -> FhirResponse:
    path, method = req.path, req.method
    if method == "HEAD":
        method = "GET"
    n = len(path)
    policy = req.policy
    if n == 0:
        if method == "GET":
            policy.require("*", "search")
            return await searching.search(ctx, req, None)
        if method == "POST":
            if req.in_bundle:
                raise BadRequest("bundles cannot be nested")
            return await bundle.process(ctx, req, dispatch)
        raise _not_allowed(req)
    head = path[0]
    route = ctx.operations.route(path)
    if route is not None:
        # URLs an operation owns besides its call (an export's status and files), the
        # OperationDefinitions generated from the table, and the Subscriptions kept apart
        # from the resources (operations/table.py).
        return await route.handler(ctx, req)
    if n == 1 and head == "metadata":
        if method != "GET":
            raise _not_allowed(req)
        if ctx.capability is None or ctx.capability_json is None:
            # Built and serialised once: it depends only on definitions loaded at start-up.
            ctx.capability = capability_statement(ctx)
            ctx.capability_json = dumps(ctx.capability, pretty=False)
        return FhirResponse(status=200, body=ctx.capability, encoded=ctx.capability_json)
    if n == 1 and head == "_history":
        if method != "GET":
            raise _not_allowed(req)
        policy.require("*", "history")
        return await history.history(ctx, req, None, None)
    if n == 1 and head == "_search":
        if method != "POST":
            raise _not_allowed(req)
        policy.require("*", "search")
        return await searching.search(ctx, req, None)
    if head.startswith("$"):
        if n == 1:
            return await _operation(ctx, req, head, None, None)
        raise NotFound(f"/{'/'.join(path)} is not a supported URL", code="not-supported")
    rt = _type(ctx, head)
    if n == 1:
        return await _type_level(ctx, req, method, rt)
    second = path[1]
    if n == 2 and second == "_history" and method == "GET":
        policy.require(rt, "history")
        return await history.history(ctx, req, rt, None)
    if n == 2 and second == "_search":
        if method != "POST":
            raise _not_allowed(req)
        policy.require(rt, "search")
        return await searching.search(ctx, req, rt)
    if n == 2 and second.startswith("$"):
        return await _operation(ctx, req, second, rt, None)
    if second.startswith("$") or second.startswith("_"):
        raise NotFound(f"{second} is not supported on {rt}", code="not-supported")
    rid = second
    if n == 2:
        return await _instance_level(ctx, req, method, rt, rid)
    third = path[2]
    if third == "_history" and method == "GET":
        policy.require(rt, "history")
        if n == 3:
            return await history.history(ctx, req, rt, rid)
        if n == 4:
            return await interactions.vread(ctx, req, rt, rid, path[3])
    if n == 3 and third.startswith("$"):
        return await _operation(ctx, req, third, rt, rid)
    if n == 3 and method == "GET" and not third.startswith(("$", "_")):
        # Compartment search, e.g. Patient/123/Observation.
        target = "" if third == "*" else _type(ctx, third)
        policy.require(target or "*", "search")
        return await searching.search(ctx, req, target or None, compartment=f"{rt}/{rid}")
    raise NotFound(f"/{'/'.join(path)} is not a supported URL", code="not-supported")


async def _operation(
    ctx: ServerContext, req: FhirRequest, segment: str, rt: str | None, rid: str | None
) -> FhirResponse:
    """`$name` at the system, type or instance level, through the operation table
    (https://hl7.org/fhir/R4/operations.html): method, interaction, parameters, handler."""
    level = "system" if rt is None else "type" if rid is None else "instance"
    op = ctx.operations.find(segment[1:], level, rt)
    if op is None:
        where = (
            "at the system level" if rt is None else f"on {rt}" if rid is None else f"on {rt}/[id]"
        )
        raise NotFound(f"operation {segment} is not supported {where}", code="not-supported")
    allowed = op.allowed_methods()
    if req.method not in allowed:
        raise MethodNotAllowed(
            f"{segment} takes {' or '.join(allowed)}, not {req.method}",
            headers={"Allow": ", ".join(allowed)},
        )
    interaction = op.interaction if isinstance(op.interaction, str) else None
    if interaction:
        # Checked before the parameters are read: a token without the interaction learns
        # nothing about them.
        req.policy.require(rt or "*", interaction)
    if op.affects_state:
        # Nothing makes an operation's change idempotent by key (docs/rest.md).
        idempotency.refuse_key(req, f"the operation {segment}")
    call = OperationCall(op, rt, rid, parse_params(op, req))
    if interaction is None:
        req.policy.require(rt or "*", op.interaction_for(call))
    return await op.handler(ctx, req, call)


async def _type_level(ctx: ServerContext, req: FhirRequest, method: str, rt: str) -> FhirResponse:
    interaction = _TYPE_LEVEL.get(method)
    if interaction is None:
        raise _not_allowed(req)
    _append_only(ctx, req, rt, method)
    req.policy.require(rt, interaction)
    if method == "GET":
        return await searching.search(ctx, req, rt)
    if method == "POST":
        _refuse_query_on_create(req, rt)
        return await interactions.create(ctx, req, rt)
    if method == "PUT":
        return await interactions.conditional_update(ctx, req, rt)
    if method == "DELETE":
        return await interactions.conditional_delete(ctx, req, rt)
    raise _not_allowed(req)


def _refuse_query_on_create(req: FhirRequest, rt: str) -> None:
    """A create carries no query but rendering options: `POST Patient?name=x` is a search
    posted to the wrong URL (some clients do this), or a conditional create written the wrong
    way, and would silently create. It answers 400, naming the fix (docs/rest.md, "Client
    habits")."""
    names = sorted({k for k, _ in req.params if k not in RENDERING_PARAMS})
    if names:
        raise BadRequest(
            f"POST {rt} creates a resource and takes no search parameters, but the query "
            f"has {', '.join(names)}: to search, POST {rt}/_search with them in a form body; "
            f"to create only if none matches, send them in the If-None-Exist header",
            code="invalid",
        )


async def _instance_level(
    ctx: ServerContext, req: FhirRequest, method: str, rt: str, rid: str
) -> FhirResponse:
    interaction = _INSTANCE_LEVEL.get(method)
    if interaction is None:
        raise _not_allowed(req)
    _append_only(ctx, req, rt, method)
    req.policy.require(rt, interaction)
    if method == "GET":
        return await interactions.read(ctx, req, rt, rid)
    if method == "PUT":
        return await interactions.update(ctx, req, rt, rid)
    if method == "PATCH":
        return await interactions.patch(ctx, req, rt, rid)
    if method == "DELETE":
        return await interactions.delete(ctx, req, rt, rid)
    raise _not_allowed(req)
