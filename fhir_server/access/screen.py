"""Defence in depth: every outgoing resource is checked again, in memory, against the rules.

The database query is already narrowed by the same rules (`AccessPolicy.type_filter`), so
this check should never fire; when it does, the resource is withheld and the event logged
at ERROR level, since it means a query path escaped the narrowing (HAPI's
AuthorizationInterceptor after SearchNarrowingInterceptor). Scope filters (query-qualified
scopes) are enforced by the query alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from fhir_server.access import members
from fhir_server.access.compartments import load_table as inheritance_table
from fhir_server.access.policy import AccessPolicy

Doc = dict[str, Any]
Indexer = Callable[[Doc], tuple[Doc, list[str]]]
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
    policy: AccessPolicy, indexer: Indexer, resource: Doc, stored: Iterable[str] | None = None
) -> bool:
    """The compartment rules evaluated on one resource (no logging). `stored` is the
    document's stored `comp`: a type that inherits its targets' compartments
    (access/compartments.py) is tested on those too, which the resource alone cannot show;
    without them it is tested on its own, so a path that has no stored document fails closed."""
    if policy.compartments is None and policy.rules is None:
        return True
    rt = str(resource.get("resourceType"))
    ix, comps = indexer(resource)
    if stored is not None and rt in inheritance_table().types:
        comps = [*comps, *(c for c in stored if c not in comps)]
    return policy.admits(rt, comps, ix.get("k", ()))


def screen(
    policy: AccessPolicy,
    indexer: Indexer,
    resource: Any,
    *,
    where: str,
    stored: Iterable[str] | None = None,
) -> bool:
    """True when `resource` may leave the server; False (and a loud log) when the
    post-check catches what the narrowed query should have kept out. A resource that leaves
    loses the member entries (Group.member) its caller may not see (members.py)."""
    if not isinstance(resource, dict) or not policy.restricted:
        return True
    if admitted(policy, indexer, resource, stored):
        if policy.compartments is not None:
            members.redact(resource, policy.shows_reference)
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
