"""Write rules: who may create, update, patch or delete what, as one table of data.

The table is `profiles/access/writes.json`, parsed fail-fast at start-up into frozen
dataclasses. Reads are decided by the compartment rules (family.py, care_team.py); writes
by these rules on top of them (DESIGN.md, "Portal workflows": a patient never writes an
order or a result; `sender`, `requester`, `author`, `recorder` come from the token).

Everything here is a pure function of the table and FHIR JSON; the request-time lookups
(the old version, references) live in `fhir_server/rest/write_guard.py`; a
QuestionnaireResponse's answers are checked by the clipboard workflow (portal/clipboards.py).
Element paths are FHIRPath plain paths, compiled once by the search machinery
(`fhir_server/search/paths.py`). See docs/access.md, "Writes".
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from fhir_server.access import care_team
from fhir_server.search.paths import Evaluator, compile_for_type, compile_simple

Doc = dict[str, Any]
TABLE = Path(__file__).resolve().parents[2] / "profiles" / "access" / "writes.json"
INTERACTIONS = frozenset({"create", "update", "patch", "delete"})
# The kinds of actor the policy tells apart (AccessPolicy.writer_kinds).
ACTOR_KINDS = (
    "self",
    "basic",
    "child",
    "adolescent",
    "adult-granted",
    "managed",
    "clinician",
    "break-glass",
    "system",
)
_SAME_AS = {"clinicians.directory.types": lambda: care_team.load_table().directory_types}


@dataclass(frozen=True)
class ElementPath:
    """One element path of the table, compiled for its root type (`Resource`: any)."""

    path: str
    root: str
    evaluate: Evaluator = field(compare=False, repr=False)

    def applies_to(self, rt: str) -> bool:
        return self.root in (rt, "Resource", "DomainResource")

    def values(self, resource: Any) -> list[Any]:
        return [n.value for n in self.evaluate(resource)] if isinstance(resource, dict) else []


@dataclass(frozen=True)
class Requirement:
    """`path` must yield at least one value and every value must be one of `values`."""

    element: ElementPath
    values: frozenset[str]

    def met_by(self, resource: Doc) -> bool:
        found = self.element.values(resource)
        return bool(found) and all(isinstance(v, str) and v in self.values for v in found)


@dataclass(frozen=True)
class Allowance:
    types: frozenset[str] | None  # None: every type
    interactions: frozenset[str]
    require: tuple[Requirement, ...] = ()

    def covers(self, rt: str, interaction: str) -> bool:
        return interaction in self.interactions and (self.types is None or rt in self.types)


@dataclass(frozen=True)
class ActorRules:
    kind: str
    allow: tuple[Allowance, ...]
    bound: bool  # the table's bound elements must name the token's own user
    references_visible: bool  # every reference written must be one the token may read
    protected: bool  # the table's protected elements may not change


@dataclass(frozen=True)
class BoundElement:
    element: ElementPath
    fill: bool
    many: bool

    @property
    def name(self) -> str:
        """The top-level element the server fills (`Communication.sender` -> `sender`)."""
        return self.element.path.split(".", 2)[1]


@dataclass(frozen=True)
class WriteTable:
    actors: dict[str, ActorRules]
    bound: tuple[BoundElement, ...]
    protected: tuple[ElementPath, ...]
    # Per type, the top-level elements a recipient may change on what someone else wrote
    # (`bound.recipient_changes`: a message marked read), nothing else changing.
    recipient_changes: dict[str, frozenset[str]] = field(default_factory=dict)

    def recipient_change(self, rt: str, old: Doc | None, new: Doc | None) -> bool:
        """Whether the write changes only elements a recipient may set (and something)."""
        allowed = self.recipient_changes.get(rt)
        if not allowed or old is None or new is None:
            return False
        changed = changed_elements(old, new)
        return bool(changed) and changed <= allowed


@dataclass(frozen=True)
class Refusal:
    """Why a write is refused: `forbidden` (403, the interaction is not the actor's) or
    `business-rule` (422, the content breaks a rule), naming the element when there is one."""

    code: str
    reason: str
    expression: tuple[str, ...] = ()


# --- parsing ----------------------------------------------------------------------------


def _element(path: Any, where: str) -> ElementPath:
    if not isinstance(path, str):
        raise ValueError(f"writes.json: {where}: an element path must be a string")
    compiled = compile_simple(path)
    if compiled is None or not compiled[1]:
        raise ValueError(f"writes.json: {where}: {path!r} is not a plain FHIRPath element path")
    root = compiled[0]
    evaluate = compile_for_type(path, root)
    assert evaluate is not None
    return ElementPath(path, root, evaluate)


def _groups(raw: Doc, known: frozenset[str] | None) -> dict[str, frozenset[str]]:
    out: dict[str, frozenset[str]] = {}
    for name, value in raw.items():
        if isinstance(value, dict):
            source = value.get("same_as")
            if source not in _SAME_AS:
                raise ValueError(f"writes.json: groups.{name}: unknown same_as {source!r}")
            out[name] = frozenset(_SAME_AS[source]())
        elif isinstance(value, list) and all(isinstance(t, str) for t in value):
            out[name] = frozenset(value)
        else:
            raise ValueError(f"writes.json: groups.{name} must be a list of resource types")
        unknown = out[name] - known if known is not None else set()
        if unknown:
            raise ValueError(f"writes.json: groups.{name}: unknown types {sorted(unknown)}")
    return out


def _types(raw: Any, groups: dict[str, frozenset[str]], where: str) -> frozenset[str] | None:
    if raw == "*":
        return None
    if not isinstance(raw, list) or not all(isinstance(t, str) for t in raw):
        raise ValueError(f"writes.json: {where}.types must be '*' or a list")
    out: set[str] = set()
    for t in raw:
        if t.startswith("@"):
            if t[1:] not in groups:
                raise ValueError(f"writes.json: {where}: unknown group {t!r}")
            out |= groups[t[1:]]
        else:
            out.add(t)
    return frozenset(out)


def _allowance(raw: Doc, groups: dict[str, frozenset[str]], where: str) -> Allowance:
    interactions = raw.get("interactions")
    if not isinstance(interactions, list) or not set(interactions) <= INTERACTIONS:
        raise ValueError(f"writes.json: {where}.interactions must be a subset of {INTERACTIONS}")
    require = []
    for path, values in (raw.get("require") or {}).items():
        if not (isinstance(values, list) and values and all(isinstance(v, str) for v in values)):
            raise ValueError(f"writes.json: {where}.require[{path!r}] must list codes")
        require.append(Requirement(_element(path, where), frozenset(values)))
    return Allowance(
        _types(raw.get("types"), groups, where), frozenset(interactions), tuple(require)
    )


def parse_table(raw: Doc, known_types: frozenset[str] | None = None) -> WriteTable:
    """Build the table, failing loudly on a malformed one (the server must not start)."""
    groups = _groups(raw["groups"], known_types)
    actors: dict[str, ActorRules] = {}
    for kind in ACTOR_KINDS:
        a = raw["actors"][kind]
        allow = a["allow"]
        if not isinstance(allow, list):
            raise ValueError(f"writes.json: actors.{kind}.allow must be a list")
        refs = a.get("references", "any")
        if refs not in ("any", "visible"):
            raise ValueError(f"writes.json: actors.{kind}.references is 'any' or 'visible'")
        actors[kind] = ActorRules(
            kind=kind,
            allow=tuple(
                _allowance(x, groups, f"actors.{kind}.allow[{i}]") for i, x in enumerate(allow)
            ),
            bound=bool(a.get("bound", False)),
            references_visible=refs == "visible",
            protected=bool(a.get("protected", False)),
        )
    extra = set(raw["actors"]) - set(ACTOR_KINDS)
    if extra:
        raise ValueError(f"writes.json: unknown actor kinds {sorted(extra)}")
    bound = []
    for i, b in enumerate(raw["bound"]["elements"]):
        el = _element(b.get("path"), f"bound.elements[{i}]")
        if b.get("fill") and el.path.count(".") != 1:
            raise ValueError(f"writes.json: bound.elements[{i}]: only Type.element is filled")
        bound.append(BoundElement(el, bool(b.get("fill", False)), bool(b.get("many", False))))
    protected = tuple(
        _element(p, f"protected.elements[{i}]") for i, p in enumerate(raw["protected"]["elements"])
    )
    changes: dict[str, frozenset[str]] = {}
    for rt, elements in (raw["bound"].get("recipient_changes") or {}).items():
        if rt == "note":
            continue
        if known_types is not None and rt not in known_types:
            raise ValueError(f"writes.json: bound.recipient_changes: unknown type {rt!r}")
        if not (isinstance(elements, list) and all(isinstance(e, str) for e in elements)):
            raise ValueError(f"writes.json: bound.recipient_changes.{rt} must list elements")
        changes[rt] = frozenset(elements)
    return WriteTable(
        actors=actors, bound=tuple(bound), protected=protected, recipient_changes=changes
    )


@lru_cache(maxsize=4)
def load_table(path: Path = TABLE, known_types: frozenset[str] | None = None) -> WriteTable:
    return parse_table(json.loads(path.read_text()), known_types)


# --- decisions --------------------------------------------------------------------------


def may_ever(table: WriteTable, kinds: Iterable[str], rt: str, interaction: str) -> bool:
    """Whether any of `kinds` may use `interaction` on `rt` at all: decided before the
    target is looked up, so it reveals nothing about what exists."""
    return any(a.covers(rt, interaction) for kind in kinds for a in table.actors[kind].allow)


def decide(
    table: WriteTable, kind: str, rt: str, interaction: str, resource: Doc | None
) -> Refusal | None:
    """None when `kind` may use `interaction` on this version of a resource of type `rt`."""
    covering = [a for a in table.actors[kind].allow if a.covers(rt, interaction)]
    if not covering:
        return Refusal("forbidden", f"this access token may not {interaction} {rt} resources")
    if resource is None:
        return None
    unmet: list[Requirement] = []
    for a in covering:
        missing = [r for r in a.require if not r.met_by(resource)]
        if not missing:
            return None
        unmet += missing
    first = unmet[0]
    return Refusal(
        "business-rule",
        f"{first.element.path} must be one of {', '.join(sorted(first.values))} "
        f"for this access token to {interaction} it",
        (first.element.path,),
    )


def protected_changes(table: WriteTable, rt: str, old: Doc | None, new: Doc | None) -> list[str]:
    """The protected elements whose values differ between the two versions."""
    if old is None or new is None:
        return []
    return [p.path for p in table.protected if p.applies_to(rt) and p.values(old) != p.values(new)]


# Server-kept parts of `meta`: an update is not "changing" them.
_SERVER_META = frozenset({"versionId", "lastUpdated"})


def changed_elements(old: Doc, new: Doc) -> frozenset[str]:
    """The top-level elements whose values differ between two versions (`meta` compared
    without the parts the server keeps)."""

    def meta(r: Doc) -> Any:
        m = r.get("meta")
        return {k: v for k, v in m.items() if k not in _SERVER_META} if isinstance(m, dict) else m

    keys = (set(old) | set(new)) - {"meta"}
    out = {k for k in keys if old.get(k) != new.get(k)}
    if (meta(old) or None) != (meta(new) or None):
        out.add("meta")
    return frozenset(out)


def fill_bound(table: WriteTable, rt: str, resource: Doc, user: str) -> Doc:
    """The resource with each absent fillable bound element set to the token's user."""
    out = resource
    for b in table.bound:
        if b.fill and b.element.applies_to(rt) and b.name not in resource:
            ref = {"reference": user}
            out = {**out, b.name: [ref] if b.many else ref}
    return out


def bound_violations(
    table: WriteTable, rt: str, resource: Doc | None, identities: frozenset[str]
) -> list[str]:
    """Bound elements of `resource` naming someone other than the token's user, in the
    resource and in each resource it contains (a message carrying a contained Observation
    "performed by" a clinician claims as much as a top-level one would)."""
    if resource is None:
        return []
    bad = _bound_violations(table, rt, resource, identities, rt)
    for i, inner in enumerate(resource.get("contained") or []):
        if isinstance(inner, dict) and isinstance(inner.get("resourceType"), str):
            where = f"{rt}.contained[{i}]"
            bad += _bound_violations(table, inner["resourceType"], inner, identities, where)
    return bad


def _bound_violations(
    table: WriteTable, rt: str, resource: Doc, identities: frozenset[str], where: str
) -> list[str]:
    bad = []
    for b in table.bound:
        if not b.element.applies_to(rt):
            continue
        for value in b.element.values(resource):
            ref = value.get("reference") if isinstance(value, dict) else None
            if ref not in identities:
                bad.append(where + b.element.path.removeprefix(rt))
                break
    return bad


def references(node: Any, path: str) -> Iterator[tuple[str, str]]:
    """(dotted element path, reference) for every `reference` in the resource and in the
    resources it contains; references to a contained resource (`#...`) left out."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "reference" and isinstance(v, str):
                if not v.startswith("#"):
                    yield path, v
            else:
                yield from references(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from references(v, f"{path}[{i}]")
