"""OpenAPI 3.0 generated from the CapabilityStatement (issue 16, developer experience item 3).

Nothing here is written by hand per type: every path comes from the CapabilityStatement the
server publishes (`rest.resource[].interaction`, `searchParam`, `operation`, and the system
`interaction` / `operation`), and each operation's parameters from the OperationDefinition
its `definition` names (fhir_server/operations/definitions.py). Served at `/openapi.json`,
with a browsable page at `/openapi` (docs/rest.md, "OpenAPI").
"""

from __future__ import annotations

import html
from typing import Any

from fhir_server.capability import capability_statement
from fhir_server.context import ServerContext
from fhir_server.operations.definitions import definition_url, operation_definition

Doc = dict[str, Any]
FHIR_JSON = "application/fhir+json"
# Search parameter types as query string schemas (https://hl7.org/fhir/R4/search.html).
SEARCH_SCHEMAS: dict[str, Doc] = {"number": {"type": "number"}}
# FHIR primitive types of operation parameters as query string schemas.
PRIMITIVE_SCHEMAS: dict[str, Doc] = {
    "boolean": {"type": "boolean"},
    "integer": {"type": "integer"},
    "positiveInt": {"type": "integer", "minimum": 1},
    "unsignedInt": {"type": "integer", "minimum": 0},
    "decimal": {"type": "number"},
}
PRIMITIVES = {
    "string", "code", "uri", "url", "canonical", "id", "date", "dateTime", "instant",
    "boolean", "integer", "positiveInt", "unsignedInt", "decimal", "oid", "uuid", "markdown",
}  # fmt: skip


def _resource(ref: str = "Resource") -> Doc:
    return {"$ref": f"#/components/schemas/{ref}"}


def _answer(what: str, schema: Doc | None = None) -> Doc:
    return {
        "200": {"description": what, "content": {FHIR_JSON: {"schema": schema or _resource()}}},
        "default": {
            "description": "An error, as an OperationOutcome",
            "content": {FHIR_JSON: {"schema": _resource("OperationOutcome")}},
        },
    }


def _body(what: str) -> Doc:
    return {"required": True, "description": what, "content": {FHIR_JSON: {"schema": _resource()}}}


ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
VID = {"name": "vid", "in": "path", "required": True, "schema": {"type": "string"}}


def _search_parameters(res: Doc) -> list[Doc]:
    out = []
    for p in res.get("searchParam", []):
        param: Doc = {
            "name": p["name"],
            "in": "query",
            "required": False,
            "schema": SEARCH_SCHEMAS.get(p.get("type", ""), {"type": "string"}),
            "x-fhir-search-type": p.get("type"),
        }
        if p.get("documentation"):
            param["description"] = p["documentation"]
        out.append(param)
    return out


def _operation_paths(
    rt: str | None, entries: list[Doc], defs: dict[str, tuple[Doc, set[str]]]
) -> dict[str, Doc]:
    paths: dict[str, Doc] = {}
    for entry in entries:
        found = defs.get(entry["definition"])
        if found is None:
            continue
        d, methods = found
        levels = ["system"] if rt is None else [x for x in ("type", "instance") if d.get(x)]
        for level in levels:
            url = f"/${entry['name']}" if rt is None else f"/{rt}/${entry['name']}"
            if level == "instance":
                url = f"/{rt}/{{id}}/${entry['name']}"
            paths[url] = _operation(d, methods, level, rt)
    return paths


def _operation(d: Doc, methods: set[str], level: str, rt: str | None) -> Doc:
    ins = [p for p in d.get("parameter", []) if p.get("use") == "in"]
    where = "" if rt is None else f" on {rt}" + (" instance" if level == "instance" else "")
    summary = f"${d['code']}{where}"
    item: Doc = {}
    common = [ID] if level == "instance" else []
    if "GET" in methods:
        query = [
            {
                "name": p["name"],
                "in": "query",
                "required": p.get("min", 0) > 0,
                "schema": PRIMITIVE_SCHEMAS.get(p.get("type", ""), {"type": "string"}),
                **({"description": p["documentation"]} if p.get("documentation") else {}),
            }
            for p in ins
            if p.get("type") in PRIMITIVES and not p.get("part")
        ]
        item["get"] = {
            "summary": summary,
            "description": d.get("description", ""),
            "operationId": f"get{level}{rt or ''}{d['code']}".replace("-", "_"),
            "parameters": common + query,
            "responses": _answer(f"The result of ${d['code']}"),
        }
    if "POST" in methods:
        names = ", ".join(p["name"] for p in ins) or "none"
        item["post"] = {
            "summary": summary,
            "description": f"{d.get('description', '')} Input parameters: {names}.".strip(),
            "operationId": f"post{level}{rt or ''}{d['code']}".replace("-", "_"),
            "parameters": common,
            "requestBody": {
                "required": False,
                "description": "A Parameters resource (an empty body is no parameters)",
                "content": {FHIR_JSON: {"schema": _resource("Parameters")}},
            },
            "responses": _answer(f"The result of ${d['code']}"),
        }
    return item


def _type_paths(res: Doc) -> dict[str, Doc]:
    rt = res["type"]
    codes = {i["code"] for i in res.get("interaction", [])}
    search = _search_parameters(res)
    paths: dict[str, Doc] = {}
    type_level: Doc = {}
    if "search-type" in codes:
        type_level["get"] = {
            "summary": f"Search {rt}",
            "operationId": f"search{rt}",
            "parameters": search,
            "responses": _answer(f"A searchset Bundle of {rt}", _resource("Bundle")),
        }
        paths[f"/{rt}/_search"] = {
            "post": {
                "summary": f"Search {rt} (parameters in a form body)",
                "operationId": f"searchPost{rt}",
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/x-www-form-urlencoded": {"schema": {"type": "object"}}
                    },
                },
                "responses": _answer(f"A searchset Bundle of {rt}", _resource("Bundle")),
            }
        }
    if "create" in codes:
        type_level["post"] = {
            "summary": f"Create a {rt}",
            "operationId": f"create{rt}",
            "requestBody": _body(f"The {rt} to create"),
            "responses": _answer(f"The created {rt}"),
        }
    if type_level:
        paths[f"/{rt}"] = type_level
    instance: Doc = {}
    verbs = {"read": "get", "update": "put", "patch": "patch", "delete": "delete"}
    for code, verb in verbs.items():
        if code in codes:
            op: Doc = {
                "summary": f"{code.capitalize()} a {rt}",
                "operationId": f"{code}{rt}",
                "parameters": [ID],
                "responses": _answer(f"The {rt}"),
            }
            if verb in ("put", "patch"):
                op["requestBody"] = _body(
                    f"The {rt}" if verb == "put" else "A JSON Patch or FHIRPath Patch"
                )
            instance[verb] = op
    if instance:
        paths[f"/{rt}/{{id}}"] = instance
    if "history-instance" in codes:
        paths[f"/{rt}/{{id}}/_history"] = {
            "get": {
                "summary": f"History of a {rt}",
                "operationId": f"history{rt}",
                "parameters": [ID],
                "responses": _answer("A history Bundle", _resource("Bundle")),
            }
        }
    if "vread" in codes:
        paths[f"/{rt}/{{id}}/_history/{{vid}}"] = {
            "get": {
                "summary": f"A version of a {rt}",
                "operationId": f"vread{rt}",
                "parameters": [ID, VID],
                "responses": _answer(f"The {rt} version"),
            }
        }
    return paths


def _security(rest: Doc) -> Doc:
    urls: dict[str, str] = {}
    for ext in rest.get("security", {}).get("extension", []):
        if ext.get("url", "").endswith("oauth-uris"):
            urls = {e["url"]: e.get("valueUri", "") for e in ext.get("extension", [])}
    flow = {
        "authorizationUrl": urls.get("authorize", "/auth/authorize"),
        "tokenUrl": urls.get("token", "/auth/token"),
        "scopes": {
            "patient/*.rs": "read and search the patient's records",
            "user/*.rs": "read and search what the user may see",
            "openid fhirUser": "who signed in",
        },
    }
    return {"smart": {"type": "oauth2", "flows": {"authorizationCode": flow}}}


def build(ctx: ServerContext) -> Doc:
    cap = capability_statement(ctx)
    defs: dict[str, tuple[Doc, set[str]]] = {}
    for op in ctx.operations.operations:
        url = definition_url(ctx.base_url, op)
        d, methods = defs.setdefault(url, (operation_definition(ctx.base_url, op), set()))
        methods.update(op.methods)
    rest = cap["rest"][0]
    paths: dict[str, Doc] = {
        "/metadata": {
            "get": {
                "summary": "The CapabilityStatement (no token needed)",
                "operationId": "capabilities",
                "security": [],
                "responses": _answer("The CapabilityStatement"),
            }
        }
    }
    system = {i["code"] for i in rest.get("interaction", [])}
    if system & {"transaction", "batch"}:
        paths["/"] = {
            "post": {
                "summary": "A transaction or batch Bundle",
                "operationId": "transaction",
                "requestBody": _body("A Bundle of type transaction or batch"),
                "responses": _answer("The response Bundle", _resource("Bundle")),
            }
        }
    if "history-system" in system:
        paths["/_history"] = {
            "get": {
                "summary": "History of every type",
                "operationId": "historySystem",
                "responses": _answer("A history Bundle", _resource("Bundle")),
            }
        }
    paths.update(_operation_paths(None, rest.get("operation", []), defs))
    for res in rest.get("resource", []):
        paths.update(_type_paths(res))
        paths.update(_operation_paths(res["type"], res.get("operation", []), defs))
    resource = {
        "type": "object",
        "required": ["resourceType"],
        "properties": {"resourceType": {"type": "string"}, "id": {"type": "string"}},
        "additionalProperties": True,
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": cap.get("title") or cap.get("name") or "FHIR server",
            "version": cap.get("software", {}).get("version") or cap.get("fhirVersion", "4.0.1"),
            "description": "Generated from this server's CapabilityStatement "
            f"({ctx.base_url}/metadata); FHIR R4 {cap.get('fhirVersion', '4.0.1')}.",
        },
        "servers": [{"url": ctx.base_url}],
        "security": [{"smart": []}],
        "paths": paths,
        "components": {
            "schemas": {
                name: resource for name in ("Resource", "Bundle", "OperationOutcome", "Parameters")
            },
            "securitySchemes": _security(rest),
        },
    }


def page(doc: Doc) -> str:
    """A browsable, server-rendered list of the paths (no scripts, no external assets)."""
    e = html.escape
    rows = []
    for path, item in doc["paths"].items():
        for verb, op in item.items():
            params = ", ".join(p["name"] for p in op.get("parameters", []) if p["in"] == "query")
            rows.append(
                f"<tr><td><code>{e(verb.upper())}</code></td><td><code>{e(path)}</code></td>"
                f"<td>{e(op.get('summary', ''))}</td><td>{e(params)}</td></tr>"
            )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>OpenAPI: MHS FHIR R4 server</title><style>body{font:15px/1.4 system-ui,"
        "sans-serif;margin:1.5rem}table{border-collapse:collapse}td,th{border:1px solid #999;"
        "padding:.15rem .4rem;text-align:left;vertical-align:top}</style></head><body><main>"
        f"<h1>{e(doc['info']['title'])}: API</h1><p>{e(doc['info']['description'])} The "
        'machine-readable document: <a href="/openapi.json">/openapi.json</a> (OpenAPI '
        f"{e(doc['openapi'])}). Base URL: <code>{e(doc['servers'][0]['url'])}</code>.</p>"
        "<table><tr><th>Method</th><th>Path</th><th>What</th><th>Query parameters</th></tr>"
        f"{''.join(rows)}</table></main></body></html>"
    )


def install(app: Any) -> None:
    """`/openapi.json` and `/openapi`, built once on first use (the definitions are loaded
    at start-up and do not change while the process runs)."""
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, Response

    from fhir_server.devx.landing import HEADERS

    built: list[Doc] = []

    def document(request: Request) -> Doc:
        if not built:
            built.append(build(request.app.state.ctx))
        return built[0]

    async def as_json(request: Request) -> Response:
        return JSONResponse(
            document(request), headers={**HEADERS, "Access-Control-Allow-Origin": "*"}
        )

    async def as_page(request: Request) -> Response:
        return HTMLResponse(page(document(request)), headers=HEADERS)

    app.add_route("/openapi.json", as_json, methods=["GET"], include_in_schema=False)
    app.add_route("/openapi", as_page, methods=["GET"], include_in_schema=False)
