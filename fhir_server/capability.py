"""The CapabilityStatement, generated from what the server really supports.

Resource types come from the validation models, search parameters from the search
registry, profiles from profiles/. See https://hl7.org/fhir/R4/capabilitystatement.html.
"""

from __future__ import annotations

from typing import Any

import smart_auth
from fhir_server.context import ServerContext
from fhir_server.operations.definitions import SEARCH as DEFINITION_SEARCH
from fhir_server.operations.definitions import TYPE as OPERATION_DEFINITION
from fhir_server.operations.definitions import resource_operations, system_operations
from fhir_server.search.parse import FULL_TEXT_DOC
from fhir_server.storage.store import ResourceStore

Doc = dict[str, Any]

INSTANCE_INTERACTIONS = ["read", "vread", "update", "patch", "delete", "history-instance"]
TYPE_INTERACTIONS = ["create", "search-type", "history-type"]
SOFTWARE_VERSION = "0.1.0"


def _search_params(ctx: ServerContext, rt: str) -> list[Doc]:
    out = []
    # A type kept apart (the audit log) is searched by the parameters it is indexed for.
    served = getattr(_apart(ctx, rt), "searchable", None)
    for code, sp in sorted(ctx.registry.params_for(rt).items()):
        if served is not None and code not in served:
            continue
        entry: Doc = {"name": code, "type": sp.type}
        url = getattr(sp, "url", None)
        if url:
            entry["definition"] = url
        doc = FULL_TEXT_DOC.get(code) or _documentation(sp.description, rt)
        if doc:
            entry["documentation"] = doc
        out.append(entry)
    return out


def _apart(ctx: ServerContext, rt: str) -> ResourceStore | None:
    """The store of a type kept in a collection of its own (the audit log), else None."""
    store: ResourceStore | None = getattr(ctx, "store", None)  # None: a definitions-only ctx
    if store is None or store.for_type(rt) is store:
        return None
    return store.for_type(rt)


def _documentation(description: str, rt: str) -> str:
    """The part of an HL7 description about `rt`.

    Shared parameters describe every base type in one text ("Multiple Resources: ...
    * [Patient](patient.html): The patient's date of birth"); keep the line for `rt`.
    """
    text = description.strip()
    if not text.startswith("Multiple Resources"):
        return text
    marker = f"[{rt}]("
    for line in text.splitlines():
        if marker in line and "): " in line:
            return line.split("): ", 1)[1].strip()
    return text


def _resource(ctx: ServerContext, rt: str) -> Doc:
    r: Doc = {
        "type": rt,
        "interaction": [{"code": c} for c in INSTANCE_INTERACTIONS + TYPE_INTERACTIONS],
        "versioning": "versioned-update",
        "readHistory": True,
        "updateCreate": True,
        "conditionalCreate": True,
        "conditionalRead": "not-supported",
        "conditionalUpdate": True,
        "conditionalDelete": "single",
        "referencePolicy": ["literal", "logical"],
        "searchParam": _search_params(ctx, rt),
    }
    # From the operation table (fhir_server/operations/table.py).
    operations = resource_operations(ctx.operations, ctx.base_url, rt)
    if operations:
        r["operation"] = operations
    profiles = [u for u in ctx.validator.profile_urls() if _profile_type(u) == rt]
    if profiles:
        r["supportedProfile"] = profiles
    if _apart(ctx, rt) is not None:
        # The audit log: written by the server only, never changed (rest/dispatch.py).
        r["interaction"] = [{"code": c} for c in ("read", "vread", "history-instance")] + [
            {"code": c} for c in ("search-type", "history-type")
        ]
        for key in ("updateCreate", "conditionalCreate", "conditionalUpdate"):
            r[key] = False
        r["conditionalDelete"] = "not-supported"
        r["versioning"] = "no-version"
    if rt == OPERATION_DEFINITION:
        # Generated from the operation table, never stored (operations/definitions.py).
        r = {
            "type": rt,
            "interaction": [{"code": "read"}, {"code": "search-type"}],
            "searchParam": [p for p in r["searchParam"] if p["name"] in DEFINITION_SEARCH],
            **({"operation": r["operation"]} if "operation" in r else {}),
        }
    return r


def _profile_type(url: str) -> str:
    # Our profile URLs end in mhs-<type>, e.g. .../StructureDefinition/mhs-patient.
    tail = url.rsplit("/", 1)[-1]
    return tail.removeprefix("mhs-").capitalize() if tail.startswith("mhs-") else ""


def capability_statement(ctx: ServerContext) -> Doc:
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-22",
        "publisher": "MHS FHIR server project",
        "kind": "instance",
        "software": {"name": "mhs-fhir-server", "version": SOFTWARE_VERSION},
        "implementation": {"description": "MHS-style FHIR R4 record server", "url": ctx.base_url},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [
            {
                "mode": "server",
                "security": smart_auth.security_element(ctx.settings),
                "resource": [_resource(ctx, rt) for rt in sorted(ctx.known_types)],
                "interaction": [
                    {"code": "transaction"},
                    {"code": "batch"},
                    {"code": "search-system"},
                    {"code": "history-system"},
                ],
                "operation": system_operations(ctx.operations, ctx.base_url),
            }
        ],
        # Bulk Data Access IG 2.0.0 (fhir_server/exchange/bulk_routes.py).
        "instantiates": ["http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"],
    }
