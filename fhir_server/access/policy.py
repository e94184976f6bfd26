"""The access policy of one request, built from its SMART token.

A policy is a search: the patient context and any query-qualified scopes become MongoDB
filters built by the one search parser and query builder (fhir_server.search), ANDed into
every query the request makes (main query, chains, `_has`, includes), so paging and totals
stay right and a hidden resource answers exactly as a missing one.

Scopes: https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fhir_server.errors import Forbidden
from fhir_server.search.execute import criteria_filter
from fhir_server.search.parse import parse_search
from fhir_server.search.query import any_of
from smart_auth import AuthContext, allows, query_filters

Doc = dict[str, Any]

# FHIR interactions as the scope letters know them (c r u d s).
INTERACTION = {
    "read": "read",
    "vread": "read",
    "history": "read",
    "search": "search",
    "create": "create",
    "update": "update",
    "patch": "update",
    "delete": "delete",
}


@dataclass(frozen=True)
class AccessPolicy:
    """What one request may see and do; `OPEN` (no token checks) only when auth is off."""

    auth: AuthContext | None = None
    # Patient compartments the request is confined to; None = not confined to patients.
    compartments: tuple[str, ...] | None = None
    # Per type, the query-qualified scope restriction already built as a Mongo filter.
    scope_filters: dict[str, Doc] = field(default_factory=dict)

    @property
    def restricted(self) -> bool:
        """True whenever a token governs the request (its filters may still be empty)."""
        return self.auth is not None

    def require(self, resource_type: str, interaction: str) -> None:
        """403 when no scope grants the interaction on the type (SMART: not granted)."""
        if self.auth is None:
            return
        if not allows(self.auth.scopes, resource_type, INTERACTION[interaction]):
            raise Forbidden(f"the access token does not grant {interaction} on {resource_type}")

    def type_filter(self, resource_type: str) -> Doc:
        """The filter ANDed into every query on `resource_type` ("*": any type)."""
        if self.auth is None:
            return {}
        if resource_type != "*" and not (
            allows(self.auth.scopes, resource_type, "read")
            or allows(self.auth.scopes, resource_type, "search")
        ):
            # Not granted at all: included or chained resources of this type stay out.
            return {"_id": {"$in": []}}
        parts: list[Doc] = []
        if self.compartments is not None:
            parts.append({"comp": {"$in": list(self.compartments)}})
        scoped = self.scope_filters.get(resource_type)
        if scoped is not None:
            parts.append(scoped)
        if not parts:
            return {}
        return parts[0] if len(parts) == 1 else {"$and": parts}

    def check_write(self, compartments: list[str]) -> None:
        """A confined request may only write into its own patient compartments."""
        if self.compartments is None:
            return
        if not set(compartments) & set(self.compartments):
            raise Forbidden(
                "the resource is outside the patient compartments this access token may write to"
            )


OPEN = AccessPolicy()


def _confinement(auth: AuthContext) -> tuple[str, ...] | None:
    """Patient compartments a token is confined to (None for system and clinician users)."""
    if auth.is_system:
        return None
    contexts = {s.context for s in auth.scopes}
    fhir_user = auth.fhir_user or ""
    if "user" in contexts and fhir_user.startswith("Practitioner/"):
        # Clinicians: care-team confinement belongs to the family/care-team policy (issue 5).
        return None
    allowed: list[str] = []
    if "patient" in contexts and auth.patient:
        allowed.append(f"Patient/{auth.patient}")
    if "user" in contexts and fhir_user.startswith("Patient/"):
        allowed += [fhir_user, *auth.acts_for]
    return tuple(dict.fromkeys(allowed))


async def build_policy(db: Any, registry: Any, auth: AuthContext) -> AccessPolicy:
    """Turn a validated token into filters, parsing query-qualified scopes as searches."""
    scope_filters: dict[str, Doc] = {}
    types = {s.resource_type for s in auth.scopes if s.query}
    for rt in types:
        if rt == "*":
            continue
        alternatives = query_filters(auth.scopes, rt, "read")
        if not alternatives:
            continue
        built = []
        for params in alternatives:
            req = parse_search(rt, list(params), registry, strict=True)
            built.append(await criteria_filter(db, registry, req))
        scope_filters[rt] = any_of(built)
    return AccessPolicy(auth=auth, compartments=_confinement(auth), scope_filters=scope_filters)
