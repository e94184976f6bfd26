"""An OpenAPI 3.0 document generated from the CapabilityStatement and the
OperationDefinitions (https://spec.openapis.org/oas/v3.0.3), so it says what the server
routes and nothing else: per resource type its interactions, its search parameters with
their FHIR types and documentation, and its operations with their parameters.

Resource bodies are described loosely (an object with `resourceType`): the FHIR schema of
128 types would make the document tens of megabytes and adds nothing the FHIR
specification does not say better; each schema links to the type's definition page.
Served at `/openapi.json`, browsable at `/openapi` (devx/openapi_page.py); docs/rest.md,
"OpenAPI".
"""

from __future__ import annotations

from typing import Any

from fhir_server.operations.definitions import definition_url, operation_definition
from fhir_server.operations.registry import Operation, OperationTable

Doc = dict[str, Any]
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
FHIR_JSON = "application/fhir+json"
SPEC = "https://hl7.org/fhir/R4"
# Parameters every search takes (https://hl7.org/fhir/R4/search.html#all), besides the
# type's own from the CapabilityStatement.
RESULT_PARAMS = (
    ("_count", "number", "Results per page."),
    ("_sort", "string", "Comma-separated sort keys; a leading `-` sorts descending."),
    ("_include", "string", "Also return resources this one references (`Type:param`)."),
    ("_revinclude", "string", "Also return resources that reference this one."),
    ("_summary", "token", "`true`, `count`, `text`, `data` or `false`."),
    ("_elements", "string", "Comma-separated elements to return."),
    ("_total", "token", "`none`, `estimate` or `accurate`."),
)
SEARCH_TYPE_SCHEMA: dict[str, Doc] = {
    # Every FHIR search value is text on the wire (prefixes such as `ge2020`, `|` systems).
    "number": {"type": "string"},
    "date": {"type": "string"},
    "string": {"type": "string"},
    "token": {"type": "string"},
    "reference": {"type": "string"},
    "composite": {"type": "string"},
    "quantity": {"type": "string"},
    "uri": {"type": "string"},
    "special": {"type": "string"},
}
PRIMITIVE_SCHEMA: dict[str, Doc] = {
    "boolean": {"type": "boolean"},
    "integer": {"type": "integer"},
    "positiveInt": {"type": "integer", "minimum": 1},
    "unsignedInt": {"type": "integer", "minimum": 0},
    "decimal": {"type": "number"},
}


def _ref(name: str) -> Doc:
    return {"$ref": f"#/components/schemas/{name}"}


def _responses(ok: str, schema: str | None, *, codes: tuple[str, ...] = ()) -> Doc:
    out: Doc = {ok: {"description": "Success"}}
    if schema:
        out[ok]["content"] = {FHIR_JSON: {"schema": _ref(schema)}}
    for code in codes:
        out[code] = {"$ref": f"#/components/responses/{code}"}
    out["default"] = {"$ref": "#/components/responses/error"}
    return out


def _search_parameter(p: Doc) -> Doc:
    ptype = p.get("type", "string")
    text = p.get("documentation", "")
    return {
        "name": p["name"],
        "in": "query",
        "required": False,
        "description": f"{text} (FHIR search type: {ptype})".strip(),
        "schema": SEARCH_TYPE_SCHEMA.get(ptype, {"type": "string"}),
        "x-fhir-search-type": ptype,
        **({"x-fhir-definition": p["definition"]} if p.get("definition") else {}),
    }


def _result_parameters() -> list[Doc]:
    return [{"$ref": f"#/components/parameters/{name}"} for name, _, _ in RESULT_PARAMS]


def _operation_parameters(definition: Doc, *, query: bool) -> list[Doc]:
    """The `in` parameters a GET carries in its query string (primitive ones only)."""
    if not query:
        return []
    out = []
    for p in definition.get("parameter", []):
        # A resource can only travel in a Parameters body (POST).
        # A parameter with parts (no type) or a resource only travels in a Parameters body.
        ptype = p.get("type", "")
        complex_type = not ptype or (ptype[:1].isupper() and ptype != "Reference")
        if p.get("use") != "in" or complex_type:
            continue
        out.append(
            {
                "name": p["name"],
                "in": "query",
                "required": p.get("min", 0) > 0,
                "description": p.get("documentation", ""),
                "schema": PRIMITIVE_SCHEMA.get(p["type"], {"type": "string"})
                if p.get("max", "1") == "1"
                else {
                    "type": "array",
                    "items": PRIMITIVE_SCHEMA.get(p["type"], {"type": "string"}),
                },
                **({"explode": True, "style": "form"} if p.get("max", "1") != "1" else {}),
                "x-fhir-type": p["type"],
            }
        )
    return out


def _operation_text(definition: Doc) -> str:
    lines = [definition.get("description", "")]
    params = definition.get("parameter", [])
    if params:
        lines.append("")
        lines.append("| parameter | use | type | cardinality | documentation |")
        lines.append("|---|---|---|---|---|")
        for p in params:
            lines.append(
                f"| {p['name']} | {p['use']} | {p.get('type', 'parts')} | {p['min']}..{p['max']} | "
                f"{p.get('documentation', '').replace('|', '/')} |"
            )
    lines.append("")
    lines.append(f"OperationDefinition: `{definition['url']}`")
    return "\n".join(lines)


def _operation_paths(
    op: Operation, definition: Doc, prefix: str, tag: str, op_id: str
) -> dict[str, Doc]:
    item: Doc = {}
    for method in sorted(op.methods):
        entry: Doc = {
            "tags": [tag],
            "summary": definition.get("title") or f"${op.name}",
            "description": _operation_text(definition),
            "operationId": f"{op_id}{method.capitalize()}",
            "parameters": _operation_parameters(definition, query=method == "GET"),
            "responses": _responses("200", None, codes=("401", "404")),
            "x-fhir-operation-definition": definition["url"],
            # The definition's parameters as they are, for the browsable page.
            "x-fhir-parameters": definition.get("parameter", []),
        }
        if method == "POST":
            entry["requestBody"] = {
                "required": False,
                "description": "A Parameters resource (or form fields) with the `in` "
                "parameters; empty means no parameters.",
                "content": {FHIR_JSON: {"schema": _ref("Parameters")}},
            }
        item[method.lower()] = entry
    return {prefix: item} if item else {}


def _type_paths(resource: Doc, table: OperationTable, base: str) -> dict[str, Doc]:
    rt = resource["type"]
    codes = {i["code"] for i in resource.get("interaction", [])}
    id_param = {"$ref": "#/components/parameters/id"}
    paths: dict[str, Doc] = {}
    type_item: Doc = {}
    if "search-type" in codes:
        params = [_search_parameter(p) for p in resource.get("searchParam", [])]
        type_item["get"] = {
            "tags": [rt],
            "summary": f"Search {rt}",
            "operationId": f"search{rt}",
            "parameters": params + _result_parameters(),
            "responses": _responses("200", "Bundle", codes=("400", "401")),
        }
        paths[f"/{rt}/_search"] = {
            "post": {
                "tags": [rt],
                "summary": f"Search {rt} with form fields",
                "operationId": f"searchPost{rt}",
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/x-www-form-urlencoded": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    p["name"]: SEARCH_TYPE_SCHEMA.get(p["type"], {"type": "string"})
                                    for p in resource.get("searchParam", [])
                                },
                            }
                        }
                    },
                },
                "responses": _responses("200", "Bundle", codes=("400", "401")),
            }
        }
    if "create" in codes:
        type_item["post"] = {
            "tags": [rt],
            "summary": f"Create a {rt}",
            "description": "Search parameters in the query string are refused (400): a "
            "search is GET or POST `_search`. `If-None-Exist` makes the create conditional.",
            "operationId": f"create{rt}",
            "parameters": [{"$ref": "#/components/parameters/If-None-Exist"}],
            "requestBody": {"required": True, "content": {FHIR_JSON: {"schema": _ref(rt)}}},
            "responses": _responses("201", rt, codes=("400", "401", "412", "422")),
        }
    if type_item:
        paths[f"/{rt}"] = type_item
    instance: Doc = {}
    if "read" in codes:
        instance["get"] = {
            "tags": [rt],
            "summary": f"Read a {rt}",
            "operationId": f"read{rt}",
            "responses": _responses("200", rt, codes=("401", "404", "410")),
        }
    if "update" in codes:
        instance["put"] = {
            "tags": [rt],
            "summary": f"Update (or create) a {rt}",
            "operationId": f"update{rt}",
            "parameters": [{"$ref": "#/components/parameters/If-Match"}],
            "requestBody": {"required": True, "content": {FHIR_JSON: {"schema": _ref(rt)}}},
            "responses": _responses("200", rt, codes=("400", "401", "412", "422")),
        }
    if "patch" in codes:
        instance["patch"] = {
            "tags": [rt],
            "summary": f"Patch a {rt} (JSON Patch)",
            "operationId": f"patch{rt}",
            "parameters": [{"$ref": "#/components/parameters/If-Match"}],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json-patch+json": {
                        "schema": {"type": "array", "items": {"type": "object"}}
                    }
                },
            },
            "responses": _responses("200", rt, codes=("400", "401", "404", "412", "422")),
        }
    if "delete" in codes:
        instance["delete"] = {
            "tags": [rt],
            "summary": f"Delete a {rt}",
            "operationId": f"delete{rt}",
            "responses": _responses("200", None, codes=("401", "404")),
        }
    if instance:
        instance["parameters"] = [id_param]
        paths[f"/{rt}/{{id}}"] = instance
    if "history-instance" in codes:
        paths[f"/{rt}/{{id}}/_history"] = {
            "parameters": [id_param],
            "get": {
                "tags": [rt],
                "summary": f"History of a {rt}",
                "operationId": f"history{rt}",
                "parameters": [{"$ref": "#/components/parameters/_since"}],
                "responses": _responses("200", "Bundle", codes=("401", "404")),
            },
        }
    if "vread" in codes:
        paths[f"/{rt}/{{id}}/_history/{{vid}}"] = {
            "parameters": [id_param, {"$ref": "#/components/parameters/vid"}],
            "get": {
                "tags": [rt],
                "summary": f"Read a version of a {rt}",
                "operationId": f"vread{rt}",
                "responses": _responses("200", rt, codes=("401", "404", "410")),
            },
        }
    if "history-type" in codes:
        paths[f"/{rt}/_history"] = {
            "get": {
                "tags": [rt],
                "summary": f"History of all {rt}s",
                "operationId": f"historyType{rt}",
                "parameters": [{"$ref": "#/components/parameters/_since"}],
                "responses": _responses("200", "Bundle", codes=("401",)),
            }
        }
    advertised = {o["definition"] for o in resource.get("operation", [])}
    for op in table.operations:
        if definition_url(base, op) not in advertised:
            continue
        definition = operation_definition(base, op)
        name = _camel(op.name)
        if "type" in op.levels and op.serves("type", rt):
            paths.update(_operation_paths(op, definition, f"/{rt}/${op.name}", rt, f"{name}{rt}"))
        if "instance" in op.levels and op.serves("instance", rt):
            item = _operation_paths(
                op, definition, f"/{rt}/{{id}}/${op.name}", rt, f"{name}{rt}Instance"
            )
            for value in item.values():
                value["parameters"] = [id_param]
            paths.update(item)
    return paths


def _camel(name: str) -> str:
    parts = [p for p in name.replace("_", "-").split("-") if p]
    return parts[0] + "".join(p.capitalize() for p in parts[1:])


def _security(capability: Doc) -> tuple[Doc, list[Doc]]:
    security = capability["rest"][0].get("security", {})
    uris = {}
    for ext in security.get("extension", []):
        if ext.get("url") == OAUTH_URIS:
            uris = {e["url"]: e.get("valueUri", "") for e in ext.get("extension", [])}
    if not uris.get("authorize") or not uris.get("token"):
        return {}, []
    scopes = {
        "patient/*.rs": "Read and search the chosen patient's records",
        "user/*.rs": "Read and search what the signed-in user may see",
        "system/*.rs": "Backend services: read and search (client credentials)",
        "openid": "OpenID Connect identity",
        "fhirUser": "The signed-in user's FHIR resource",
        "launch/patient": "Choose a patient at launch",
        "offline_access": "A refresh token",
    }
    scheme = {
        "smart": {
            "type": "oauth2",
            "description": security.get("description", "SMART App Launch 2.2"),
            "flows": {
                "authorizationCode": {
                    "authorizationUrl": uris["authorize"],
                    "tokenUrl": uris["token"],
                    "scopes": scopes,
                },
                "clientCredentials": {"tokenUrl": uris["token"], "scopes": scopes},
            },
        }
    }
    return scheme, [{"smart": []}]


def _components(types: list[str]) -> Doc:
    schemas: Doc = {
        rt: {
            "type": "object",
            "description": f"A FHIR R4 {rt}: {SPEC}/{rt.lower()}.html",
            "required": ["resourceType"],
            "properties": {
                "resourceType": {"type": "string", "enum": [rt]},
                "id": {"type": "string"},
                "meta": {"type": "object"},
            },
            "additionalProperties": True,
            "externalDocs": {"url": f"{SPEC}/{rt.lower()}.html"},
        }
        for rt in types
    }
    for core in ("Bundle", "OperationOutcome", "Parameters", "CapabilityStatement"):
        schemas.setdefault(
            core,
            {
                "type": "object",
                "required": ["resourceType"],
                "properties": {"resourceType": {"type": "string", "enum": [core]}},
                "additionalProperties": True,
                "externalDocs": {"url": f"{SPEC}/{core.lower()}.html"},
            },
        )
    parameters: Doc = {
        "id": {
            "name": "id",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "pattern": "^[A-Za-z0-9\\-.]{1,64}$"},
        },
        "vid": {"name": "vid", "in": "path", "required": True, "schema": {"type": "string"}},
        "_since": {
            "name": "_since",
            "in": "query",
            "schema": {"type": "string", "format": "date-time"},
        },
        "If-Match": {
            "name": "If-Match",
            "in": "header",
            "description": 'Optimistic locking: `W/"<versionId>"` (412 when stale).',
            "schema": {"type": "string"},
        },
        "If-None-Exist": {
            "name": "If-None-Exist",
            "in": "header",
            "description": "Conditional create: a search query; a match answers it instead.",
            "schema": {"type": "string"},
        },
    }
    for name, ptype, text in RESULT_PARAMS:
        parameters[name] = {
            "name": name,
            "in": "query",
            "description": text,
            "schema": {"type": "integer", "minimum": 0}
            if ptype == "number"
            else {"type": "string"},
        }
    error = {FHIR_JSON: {"schema": _ref("OperationOutcome")}}
    responses = {
        code: {"description": text, "content": error}
        for code, text in (
            ("400", "Bad request: an OperationOutcome says what was wrong"),
            ("401", "No valid bearer token"),
            ("404", "Not found (a record hidden by the access policy answers the same)"),
            ("410", "Deleted"),
            ("412", "A precondition (If-Match, conditional create) failed"),
            ("422", "The resource did not validate"),
            ("error", "Any other error, as an OperationOutcome"),
        )
    }
    return {"schemas": schemas, "parameters": parameters, "responses": responses}


def openapi_document(capability: Doc, table: OperationTable) -> Doc:
    """The OpenAPI 3.0.3 document of the server whose CapabilityStatement is `capability`."""
    rest = capability["rest"][0]
    base = capability["implementation"]["url"]
    resources = rest.get("resource", [])
    types = [r["type"] for r in resources]
    paths: Doc = {
        "/metadata": {
            "get": {
                "tags": ["System"],
                "summary": "The CapabilityStatement (no token needed)",
                "operationId": "capabilities",
                "security": [],
                "responses": _responses("200", "CapabilityStatement"),
            }
        },
        "/": {
            "post": {
                "tags": ["System"],
                "summary": "A batch or transaction Bundle",
                "operationId": "transaction",
                "requestBody": {
                    "required": True,
                    "content": {FHIR_JSON: {"schema": _ref("Bundle")}},
                },
                "responses": _responses("200", "Bundle", codes=("400", "401", "422")),
            }
        },
        "/_history": {
            "get": {
                "tags": ["System"],
                "summary": "History of every resource",
                "operationId": "historySystem",
                "parameters": [{"$ref": "#/components/parameters/_since"}],
                "responses": _responses("200", "Bundle", codes=("401",)),
            }
        },
    }
    advertised = {o["definition"] for o in rest.get("operation", [])}
    for op in table.operations:
        if "system" in op.levels and definition_url(base, op) in advertised:
            definition = operation_definition(base, op)
            paths.update(
                _operation_paths(op, definition, f"/${op.name}", "System", _camel(op.name))
            )
    for resource in resources:
        paths.update(_type_paths(resource, table, base))
    security_schemes, security = _security(capability)
    components = _components(types)
    if security_schemes:
        components["securitySchemes"] = security_schemes
    return {
        "openapi": "3.0.3",
        "info": {
            "title": capability.get("implementation", {}).get("description", "FHIR server"),
            "version": capability.get("software", {}).get("version", "0"),
            "description": (
                f"FHIR {capability.get('fhirVersion', '4.0.1')} REST API, generated from "
                f"the CapabilityStatement at {base}/metadata and the OperationDefinitions "
                "it names. Every error is an OperationOutcome."
            ),
        },
        "servers": [{"url": base}],
        "security": security,
        "tags": [{"name": "System"}] + [{"name": rt} for rt in types],
        "paths": paths,
        "components": components,
        "externalDocs": {"url": f"{SPEC}/http.html", "description": "FHIR R4 RESTful API"},
    }
