"""SMART on FHIR resource scopes: parsing, matching and narrowing.

Follows SMART App Launch 2.2, "Scopes and Launch Context"
(https://hl7.org/fhir/smart-app-launch/STU2.2/scopes-and-launch-context.html):

- v1 scopes ``patient/Observation.read``, ``.write``, ``.*`` (section "Scopes for requesting
  clinical data", SMART v1 syntax) map to v2 permissions ``read = rs``, ``write = cud``,
  ``* = cruds`` (section "Scope Equivalence").
- v2 scopes ``<context>/<type>.<cruds>`` where the permission letters are a non-empty
  subset of ``c r u d s`` written in that order.
- v2 finer-grained scopes ``patient/Observation.rs?category=...`` restrict the access to
  the resources a search with those parameters would return.

Module functions are pure: no I/O, no framework.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, urlencode

Context = Literal["patient", "user", "system"]
Interaction = Literal["create", "read", "update", "delete", "search"]
Query = tuple[tuple[str, str], ...]

PERMISSION_ORDER = "cruds"
V1_PERMISSIONS: dict[str, frozenset[str]] = {
    "read": frozenset("rs"),
    "write": frozenset("cud"),
    "*": frozenset("cruds"),
}
# Interactions that are spelled differently in the REST API but need the same permission.
INTERACTION_PERMISSION: dict[str, str] = {
    "create": "c",
    "read": "r",
    "vread": "r",
    "history": "r",
    "update": "u",
    "patch": "u",
    "delete": "d",
    "search": "s",
}
CONTEXTS: tuple[Context, ...] = ("patient", "user", "system")

_SCOPE_RE = re.compile(
    r"^(?P<context>patient|user|system)/(?P<type>\*|[A-Z][A-Za-z]{0,63})"
    r"\.(?P<perm>\*|read|write|c?r?u?d?s?)(?:\?(?P<query>.+))?$"
)


class InvalidScope(ValueError):
    """A string that looks like a resource scope but breaks the grammar."""


@dataclass(frozen=True)
class Scope:
    """One parsed resource scope.

    ``query`` is ``None`` for an unrestricted scope, otherwise the search parameters (ANDed)
    that a resource must match. ``version`` and ``raw`` remember how it was written, so a
    scope granted unchanged is echoed back exactly as requested.
    """

    context: Context
    resource_type: str
    permissions: frozenset[str]
    query: Query | None = None
    version: int = field(default=2, compare=False)
    raw: str = field(default="", compare=False)

    def __str__(self) -> str:
        return self.raw or render(self)

    def allows(self, resource_type: str, permission: str) -> bool:
        return permission in self.permissions and self.resource_type in ("*", resource_type)


def parse_scope(text: str) -> Scope | None:
    """Parse one scope; ``None`` for a non-resource scope such as ``openid`` or ``launch``.

    Raises :class:`InvalidScope` for a malformed resource scope (``patient/Observation.rc``
    is out of order, ``patient/Observation.read?x=1`` mixes v1 with a query).
    """
    if "/" not in text or text.split("/", 1)[0] not in CONTEXTS:
        return None
    m = _SCOPE_RE.match(text)
    if m is None:
        raise InvalidScope(f"malformed SMART scope {text!r}")
    perm, raw_query = m["perm"], m["query"]
    if perm in V1_PERMISSIONS:
        if raw_query is not None:
            raise InvalidScope(f"v1 scope {text!r} cannot carry a query")
        permissions, version = V1_PERMISSIONS[perm], 1
    elif perm:
        permissions, version = frozenset(perm), 2
    else:
        raise InvalidScope(f"scope {text!r} grants no permission")
    query: Query | None = None
    if raw_query is not None:
        pairs = parse_qsl(raw_query, keep_blank_values=True, strict_parsing=False)
        if not pairs or any(not k or not v for k, v in pairs):
            raise InvalidScope(f"scope {text!r} has an empty or malformed query")
        query = tuple(pairs)
    context: Context = m["context"]  # type: ignore[assignment]
    return Scope(context, m["type"], permissions, query, version, text)


def split(scope: str | Iterable[str] | None) -> list[str]:
    """Split a space-separated scope string (RFC 6749 section 3.3), keeping order, no dupes."""
    if scope is None:
        return []
    items = scope.split() if isinstance(scope, str) else [s for part in scope for s in part.split()]
    return list(dict.fromkeys(items))


def parse_scopes(scope: str | Iterable[str] | None, *, strict: bool = False) -> tuple[Scope, ...]:
    """Every resource scope in a scope string; malformed ones are dropped unless ``strict``."""
    out: list[Scope] = []
    for text in split(scope):
        try:
            parsed = parse_scope(text)
        except InvalidScope:
            if strict:
                raise
            continue
        if parsed is not None:
            out.append(parsed)
    return tuple(out)


def render(scope: Scope, *, prefer_v1: bool = False) -> str:
    """The scope as text: v1 when asked for and expressible, else v2 in ``cruds`` order."""
    head = f"{scope.context}/{scope.resource_type}."
    if prefer_v1 and scope.query is None:
        for word, perms in V1_PERMISSIONS.items():
            if scope.permissions == perms:
                return head + word
    letters = "".join(p for p in PERMISSION_ORDER if p in scope.permissions)
    tail = f"?{urlencode(scope.query, safe='|:/')}" if scope.query else ""
    return head + letters + tail


def permission_for(interaction: str) -> str:
    try:
        return INTERACTION_PERMISSION[interaction]
    except KeyError:
        raise ValueError(f"unknown interaction {interaction!r}") from None


def allows(
    scopes: Iterable[Scope],
    resource_type: str,
    interaction: str,
    context: Context | None = None,
) -> bool:
    """Whether any scope permits ``interaction`` on ``resource_type``.

    A query-qualified scope permits the interaction too, but only on the resources matching
    its query: call :func:`query_filters` to get those restrictions.
    """
    letter = permission_for(interaction)
    return any(
        s.allows(resource_type, letter) for s in scopes if context is None or s.context == context
    )


def query_filters(
    scopes: Iterable[Scope],
    resource_type: str,
    interaction: str,
    context: Context | None = None,
) -> list[list[tuple[str, str]]]:
    """The query restrictions on ``interaction``: a list of alternatives (ORed), each a list
    of search parameters (ANDed).

    An empty list means unrestricted: some matching scope has no query. Only meaningful when
    :func:`allows` is true (SMART 2.2, "Finer-grained resource constraints using search
    parameters": the server applies the scope's query as if the client had added it).
    """
    letter = permission_for(interaction)
    alternatives: list[list[tuple[str, str]]] = []
    for s in scopes:
        if context is not None and s.context != context:
            continue
        if not s.allows(resource_type, letter):
            continue
        if s.query is None:
            return []
        alternatives.append(list(s.query))
    return alternatives


def intersect(a: Scope, b: Scope) -> Scope | None:
    """The access both scopes permit, or ``None``; queries of both apply (ANDed)."""
    if a.context != b.context:
        return None
    if a.resource_type == "*":
        rtype = b.resource_type
    elif b.resource_type in ("*", a.resource_type):
        rtype = a.resource_type
    else:
        return None
    perms = a.permissions & b.permissions
    if not perms:
        return None
    query: Query | None = None
    if a.query or b.query:
        query = tuple(dict.fromkeys((a.query or ()) + (b.query or ())))
    return Scope(a.context, rtype, perms, query)


def covers(outer: Scope, inner: Scope) -> bool:
    """Whether ``outer`` permits everything ``inner`` does."""
    if outer.context != inner.context:
        return False
    if outer.resource_type != "*" and outer.resource_type != inner.resource_type:
        return False
    if not inner.permissions <= outer.permissions:
        return False
    if outer.query is None:
        return True
    return inner.query is not None and set(outer.query) <= set(inner.query)


def narrow(requested: Sequence[Scope], ceiling: Sequence[Scope]) -> list[Scope]:
    """Requested scopes cut down to what ``ceiling`` permits, in request order.

    A scope the ceiling covers whole keeps its original text; a cut-down one is re-rendered
    (v1 if it was v1 and still expressible, so ``patient/*.read`` under a ceiling of single
    types becomes ``patient/Patient.read ...``).
    """
    out: list[Scope] = []
    for req in requested:
        if any(covers(c, req) for c in ceiling):
            out.append(req)
            continue
        for c in ceiling:
            cut = intersect(req, c)
            if cut is not None:
                text = render(cut, prefer_v1=req.version == 1)
                out.append(
                    Scope(
                        cut.context,
                        cut.resource_type,
                        cut.permissions,
                        cut.query,
                        req.version,
                        text,
                    )
                )
    return _dedupe(out)


def _dedupe(scopes: list[Scope]) -> list[Scope]:
    kept: list[Scope] = []
    for i, s in enumerate(scopes):
        # Mutually covering scopes are equivalent: keep the first.
        redundant = any(
            covers(o, s) and (j < i or not covers(s, o)) for j, o in enumerate(scopes) if j != i
        )
        if not redundant:
            kept.append(s)
    return kept


ANY_TYPE = "*"


def query_types(query: Query | None) -> frozenset[str]:
    """Resource types a scope's query reads besides its own (FHIR R4 search, "Chaining" and
    "Reverse Chaining": https://hl7.org/fhir/R4/search.html#chaining): the `T` of
    `_has:T:ref:...` and of `ref:T.param`, the types of `_type`. A chain that names no type
    (`subject.name`) may read any type: it counts as ``*``."""
    out: set[str] = set()
    for name, value in query or ():
        if name == "_type":
            out.update(t for t in value.split(",") if t)
        out |= _chain_types(name)
    return frozenset(out)


def _chain_types(name: str) -> set[str]:
    if name.startswith("_has:"):
        parts = name.split(":", 3)
        if len(parts) < 4:
            return {ANY_TYPE}
        return {parts[1]} | _chain_types(parts[3])
    head, dot, rest = name.partition(".")
    if not dot:
        return set()
    _, colon, target = head.partition(":")
    typed = bool(colon) and target[:1].isupper()
    return {target if typed else ANY_TYPE} | _chain_types(rest)


def reads_within(scope: Scope, ceiling: Iterable[Scope]) -> bool:
    """Whether every type ``scope``'s query reads is one ``ceiling`` lets its context read
    and search (an untyped chain needs every type)."""
    ceiling = [c for c in ceiling if c.context == scope.context]
    return all(
        any(c.allows(t, "r") for c in ceiling) and any(c.allows(t, "s") for c in ceiling)
        if t != ANY_TYPE
        else any(c.resource_type == ANY_TYPE and {"r", "s"} <= c.permissions for c in ceiling)
        for t in query_types(scope.query)
    )


def resource_types(scopes: Iterable[Scope]) -> list[str]:
    return list(dict.fromkeys(s.resource_type for s in scopes))
