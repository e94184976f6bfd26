"""Defence in depth: every outgoing resource is checked again, in memory, against the rules.

The database query is already narrowed by the same rules (`AccessPolicy.type_filter`), so
this check should never fire; when it does, the resource is withheld and the event logged
at ERROR level, since it means a query path escaped the narrowing (HAPI's
AuthorizationInterceptor after SearchNarrowingInterceptor). Scope filters (query-qualified
scopes) are enforced by the query alone.

The check tests what is stored beside the resource just read, the facts the query itself
tested: its compartments (`comp`) and access keys (`ak`, stored_keys.py), not a re-index
of the resource (docs/access.md, "The post-check"). A resource without them (a document
written before `ak`, an exported file's line) is indexed again, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from fhir_server import clock
from fhir_server.access import members, release, views
from fhir_server.access.compartments import load_table as inheritance_table
from fhir_server.access.policy import AccessPolicy
from fhir_server.access.stored_keys import stored_keys

Doc = dict[str, Any]
Indexer = Callable[[Doc], tuple[Doc, list[str]]]
# What the store wrote beside a resource: at least `comp`, and `ak` when written with it.
Stored = Mapping[str, Any]
log = logging.getLogger("fhir_server.access")


def security_labels(resource: Any) -> frozenset[tuple[str, str]]:
    """`meta.security` as (system, code) pairs."""
    if not isinstance(resource, dict):
        return frozenset()
    meta = resource.get("meta")
    labels = meta.get("security") if isinstance(meta, dict) else None
    return frozenset(
        (str(c.get("system", "")), str(c.get("code", "")))
        for c in labels or []
        if isinstance(c, dict)
    )


def admitted(
    policy: AccessPolicy, indexer: Indexer, resource: Doc, stored: Stored | None = None
) -> bool:
    """The compartment rules evaluated on one resource (no logging), on `stored`: the
    document (current or history version) it was read from, whose `comp` and `ak` are what
    the narrowed query tested. Without them (`stored` None, or a document lacking a
    current `ak`) the resource is indexed again; a type that inherits its targets'
    compartments (access/compartments.py) is then tested on the stored ones too, which the
    resource alone cannot show, so a path that has no stored document fails closed."""
    if policy.compartments is None and policy.rules is None:
        return True
    rt = str(resource.get("resourceType"))
    if policy.release is not None and not release.admits(
        release.load_table(), rt, resource, stored, clock.now()
    ):
        return False  # a result not yet released to patients (release.py)
    comps = stored.get("comp") if stored is not None else None
    if isinstance(comps, list):
        keys = stored_keys(stored or {}, policy.key_params)
        if keys is not None:
            return policy.admits(rt, comps, keys)
    ix, own = indexer(resource)
    if isinstance(comps, list) and rt in inheritance_table().types:
        own = [*own, *(c for c in comps if c not in own)]
    return policy.admits(rt, own, ix.get("k", ()))


def screen(
    policy: AccessPolicy,
    indexer: Indexer,
    resource: Any,
    *,
    where: str,
    stored: Stored | None = None,
) -> bool:
    """True when `resource` may leave the server; False (and a loud log) when the
    post-check catches what the narrowed query should have kept out. A resource that leaves
    loses the member entries (Group.member) its caller may not see (members.py) and passes
    through the request's read-time views (views.py)."""
    if not isinstance(resource, dict) or not policy.restricted:
        return True
    if admitted(policy, indexer, resource, stored):
        if policy.compartments is not None:
            members.redact(resource, policy.shows_reference)
        views.apply(policy, resource, stored)
        return True
    who = policy.auth.subject if policy.auth is not None else "?"
    log.error(
        "access post-check fired: %s would have returned %s/%s to %s; withheld",
        where,
        resource.get("resourceType"),
        resource.get("id"),
        who,
    )
    return False
