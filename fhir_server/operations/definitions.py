"""OperationDefinitions generated from the operation table, and their place in the
CapabilityStatement (https://hl7.org/fhir/R4/operationdefinition.html,
https://hl7.org/fhir/R4/capabilitystatement-definitions.html#CapabilityStatement.rest.resource.operation).

Each row of the table is served at `OperationDefinition/[id]` with the canonical `url`
`{base}/OperationDefinition/[id]`. A row that implements a published definition (Bulk Data
`$export`, core `$everything` and `$validate`) names it as `base`, and the CapabilityStatement
gives that published canonical as the operation's `definition`, as Bulk Data clients and
test kits look for it (docs/rest.md, "Operations"); every other operation's `definition` is
its own canonical. OperationDefinition is this server's own conformance resource: read and
searched here, never stored, so a client cannot write one.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from fhir_server.errors import BadRequest, MethodNotAllowed, NotFound
from fhir_server.operations.registry import Operation, OperationTable, Parameter, Route
from fhir_server.rest.messages import FhirRequest, FhirResponse

if TYPE_CHECKING:
    from fhir_server.context import ServerContext

Doc = dict[str, Any]
TYPE = "OperationDefinition"
# Our parameter types that are search types rather than FHIR data types (R4
# OperationDefinition.parameter.searchType; the data type is then `string`).
SEARCH_TYPES = {"token": "string"}
DATA_TYPES = {"reference": "Reference"}
# The search parameters the generated definitions answer (R4 OperationDefinition search).
SEARCH = ("_id", "url", "code", "name", "base", "kind")
# Rendering options, and `_count`: the few definitions always fit one page.
IGNORED = frozenset({"_format", "_pretty", "_count"})


def canonical(base_url: str, op: Operation) -> str:
    return f"{base_url}/{TYPE}/{op.definition_id}"


def definition_url(base_url: str, op: Operation) -> str:
    """The CapabilityStatement's `definition` for `op`: the published one it implements,
    else its own."""
    return op.canonical or canonical(base_url, op)


def _computer_name(op: Operation) -> str:
    # opd-0: a name usable as an identifier, e.g. "PatientEverything".
    return "".join(p[:1].upper() + p[1:] for p in re.split(r"[^A-Za-z0-9]+", op.definition_id) if p)


def _parameter(p: Parameter) -> Doc:
    out: Doc = {"name": p.name, "use": p.use, "min": p.min, "max": p.max}
    if p.parts:
        out["part"] = [_parameter(q) for q in p.parts]
    elif p.type in SEARCH_TYPES:
        out["type"], out["searchType"] = SEARCH_TYPES[p.type], p.type
    else:
        out["type"] = DATA_TYPES.get(p.type, p.type)
    doc = p.documentation
    if p.values:
        doc = f"{doc} Codes: {', '.join(p.values)}.".strip()
    if doc:
        out["documentation"] = doc
    return out


def operation_definition(base_url: str, op: Operation) -> Doc:
    """The OperationDefinition of one table row."""
    d: Doc = {
        "resourceType": TYPE,
        "id": op.definition_id,
        "url": canonical(base_url, op),
        "name": _computer_name(op),
        "status": "active",
        "kind": "operation",
        "publisher": "MHS FHIR server project",
        "affectsState": op.affects_state,
        "code": op.name,
        "system": "system" in op.levels,
        "type": "type" in op.levels,
        "instance": "instance" in op.levels,
        "parameter": [_parameter(p) for p in op.parameters],
    }
    if op.title:
        d["title"] = op.title
    notes = [op.description] if op.description else []
    if op.unsupported:
        notes.append(f"Not supported here: {', '.join(sorted(op.unsupported))}.")
    notes.append(f"HTTP: {' or '.join(sorted(op.methods))}.")
    d["description"] = " ".join(notes)
    if op.canonical:
        d["base"] = op.canonical
    if op.levels != {"system"}:
        d["resource"] = sorted(op.types) if op.types is not None else ["Resource"]
    return d


def resource_operations(table: OperationTable, base_url: str, rt: str) -> list[Doc]:
    """`CapabilityStatement.rest.resource.operation` of `rt`."""
    out: list[Doc] = []
    for op in table.operations:
        if any(op.serves(level, rt) for level in ("type", "instance") if level in op.levels):
            entry = {"name": op.name, "definition": definition_url(base_url, op)}
            if entry not in out:
                out.append(entry)
    return out


def system_operations(table: OperationTable, base_url: str) -> list[Doc]:
    """`CapabilityStatement.rest.operation`."""
    return [
        {"name": op.name, "definition": definition_url(base_url, op)}
        for op in table.operations
        if "system" in op.levels
    ]


def _matches(d: Doc, name: str, value: str) -> bool:
    if name == "_id":
        return d["id"] in value.split(",")
    if name == "name":
        return d["name"].lower().startswith(value.lower())
    key = {"url": "url", "code": "code", "base": "base", "kind": "kind"}[name]
    return d.get(key) in value.split(",")


async def answer(ctx: ServerContext, req: FhirRequest) -> FhirResponse:
    """`GET OperationDefinition/[id]` and `GET OperationDefinition?...`: open to every
    token, as the CapabilityStatement is (they describe the server, not patient data)."""
    path, method = req.path, "GET" if req.method == "HEAD" else req.method
    table, base = ctx.operations, ctx.base_url
    if method != "GET":
        raise MethodNotAllowed(
            f"{TYPE}s are generated by this server from its operation table; "
            f"clients cannot {req.method} them",
            headers={"Allow": "GET, HEAD"},
        )
    if len(path) == 2:
        op = table.by_id(path[1])
        if op is None:
            raise NotFound(f"{TYPE}/{path[1]} is not known")
        return FhirResponse(status=200, body=operation_definition(base, op))
    if len(path) != 1:
        raise NotFound(f"/{'/'.join(path)} is not a supported URL", code="not-supported")
    found = [operation_definition(base, op) for op in table.operations]
    for name, value in req.params:
        if name in IGNORED:
            continue
        if name not in SEARCH:
            raise BadRequest(
                f"Unknown search parameter {name!r} for {TYPE}; these answer: {', '.join(SEARCH)}"
            )
        found = [d for d in found if _matches(d, name, value)]
    return FhirResponse(
        status=200,
        body={
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(found),
            "link": [{"relation": "self", "url": f"{base}/{TYPE}"}],
            "entry": [
                {"fullUrl": f"{base}/{TYPE}/{d['id']}", "resource": d, "search": {"mode": "match"}}
                for d in found
            ],
        },
    )


ROUTE = Route(TYPE, answer)
