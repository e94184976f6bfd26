"""Where the audit log lives and what it is indexed for (profiles/access/audit_log.json).

The table names the type (AuditEvent), its collection and the search parameters the log
serves. Everything else follows from the R4 definitions (fhir_server/search/registry.py):
each parameter's type says which `ix` field its keys go to (extract.py) and so which index it
needs; the patient CompartmentDefinition says whether the events sit in patient
compartments (AuditEvent `patient`: "who looked at my record"). `audit_store` builds the
`AuditStore` (storage/audit_store.py) that `ResourceStore.for_type` hands out for the type.
See docs/access.md, "Audit", and docs/storage.md, "The audit log".
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fhir_server.search.extract import compartments, index_entries
from fhir_server.search.registry import Registry
from fhir_server.storage.audit_store import QUERY_KEYS, AuditStore, index_models, query_keys
from fhir_server.storage.store import ResourceStore

TABLE = Path(__file__).resolve().parents[2] / "profiles" / "access" / "audit_log.json"
# The `ix` field each parameter type's keys go to, beside the equality and presence keys in
# `k` that every type has (search/extract.py).
_FIELDS_OF_TYPE: dict[str, tuple[str, ...]] = {
    "date": ("lo", "hi"),
    "number": ("lo", "hi"),
    "quantity": ("lo", "hi"),
    "string": ("s",),
}
LAST_UPDATED = "_lastUpdated"  # served from the top-level `lu` (extract.SKIP)
# A typed search on `_id` tests the document's `_id` (search/query.py); its `ix.k` keys
# serve only system-level searches, which do not cover the log.
TYPED_ID = "_id"
PRESENCE = (":present", ":missing")  # the keys of `:missing` (search/extract.py)


@dataclass(frozen=True)
class AuditLogTable:
    resource_type: str
    collection: str
    search_parameters: frozenset[str]


def parse_table(raw: Any, registry: Registry) -> AuditLogTable:
    if not isinstance(raw, dict):
        raise ValueError("profiles/access/audit_log.json must be an object")
    rt, collection, codes = (
        raw.get(k) for k in ("resource_type", "collection", "search_parameters")
    )
    if not isinstance(rt, str) or rt not in registry.resource_types:
        raise ValueError(f"audit_log.json: 'resource_type' is not a known type: {rt!r}")
    if not isinstance(collection, str) or not collection or collection in ("resources", "history"):
        raise ValueError(
            f"audit_log.json: 'collection' must name a collection of its own: {collection!r}"
        )
    if not isinstance(codes, list) or not codes:
        raise ValueError("audit_log.json: 'search_parameters' must be a non-empty list")
    params = registry.params_for(rt)
    unknown = [c for c in codes if not isinstance(c, str) or c not in params]
    if unknown:
        raise ValueError(f"audit_log.json: {rt} has no search parameters {unknown!r}")
    return AuditLogTable(rt, collection, frozenset(codes))


@functools.cache
def _raw() -> Any:
    return json.loads(TABLE.read_text())


def load_table(registry: Registry) -> AuditLogTable:
    """The table, checked against the definitions (a malformed one stops the server)."""
    return parse_table(_raw(), registry)


def indexed_fields(table: AuditLogTable, registry: Registry) -> list[str]:
    """The `ix` fields (and `lu`) the listed parameters are searched by, in a fixed order."""
    params = registry.params_for(table.resource_type)
    wanted = {"k"}
    for code in table.search_parameters:
        wanted.update(_FIELDS_OF_TYPE.get(params[code].type, ()))
    if LAST_UPDATED in table.search_parameters:
        wanted.add("lu")
    return [f for f in ("k", "s", "lo", "hi", "lu") if f in wanted]


def compartment_sort(table: AuditLogTable, registry: Registry) -> str | None:
    """The date parameter a patient's events are sorted on, when the type is in the patient
    compartment by a listed parameter (else the log needs no compartment index)."""
    codes = table.search_parameters
    if not set(registry.compartment_params(table.resource_type)) & codes:
        return None
    params = registry.params_for(table.resource_type)
    dates = sorted(c for c in codes if params[c].type == "date" and c != LAST_UPDATED)
    return dates[0] if dates else None


def audit_store(store: ResourceStore, registry: Registry) -> AuditStore:
    """The audit log's store, on `store`'s database and time limit."""
    table = load_table(registry)
    fields = indexed_fields(table, registry)
    only = table.search_parameters - {TYPED_ID}
    # The compartments are read back from the keys of the compartment parameters (AuditEvent
    # `patient`) when the table lists them all, rather than evaluated a second time.
    comp_codes = registry.compartment_params(table.resource_type)
    from_keys = set(comp_codes) <= only
    prefixes = tuple(f"{c}=Patient/" for c in comp_codes)
    # Their keys are looked up in `comp` rather than in the index of `ix.q`, when `comp` is
    # read back from exactly those keys.
    in_comp = prefixes if from_keys else ()

    def indexer(resource: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        # The server built the event, its labels spelled as the policy table spells them
        # (audit.py): no `normalised` copy.
        ix = index_entries(resource, registry, only)
        for f in ("s", "lo", "hi"):
            if f not in fields:
                ix.pop(f, None)  # keys no index serves: not stored (their searches refused)
        # No `:present`/`:missing` keys: a third of the rest, each an index entry, for a
        # modifier no audit query uses (`:missing` on the log is refused).
        ix["k"] = [k for k in ix["k"] if not k.endswith(PRESENCE)]
        # The keys the log's index holds (storage/audit_store.py, `reduced_key`).
        ix[QUERY_KEYS] = query_keys(ix["k"], in_comp)
        if not from_keys:
            return ix, compartments(resource, registry)
        comp = [k.split("=", 1)[1] for k in ix["k"] if k.startswith(prefixes)]
        return ix, list(dict.fromkeys(comp))

    return AuditStore(
        store.db,
        indexer,
        resource_type=table.resource_type,
        collection=table.collection,
        searchable=table.search_parameters,
        indexed=frozenset(fields),
        refused_modifiers=frozenset({"missing"}),
        comp_prefixes=in_comp,
        indexes=index_models(fields, compartment_sort(table, registry)),
        max_time_ms=store.max_time_ms,
    )


def attach_audit_log(store: ResourceStore, registry: Registry) -> AuditStore:
    """Build the audit log's store and register it as the store of its type."""
    log = audit_store(store, registry)
    store.separate[log.rt] = log
    return log
