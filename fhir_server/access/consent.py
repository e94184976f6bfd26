"""Proxy-access Consents read whole: scope, root provision, classes and nested exceptions.

The rules are data (`profiles/access/family.json`, `consents`). A Consent grants a proxy
access to a patient's record when it is active, of a privacy scope, and its root provision
permits, covers today and names the proxy (Consent.provision, https://hl7.org/fhir/R4/
consent.html#provision). `provision.class` (resource types) narrows it; nested provisions are
exceptions applied in order (deny takes their classes away, permit gives them back). Any other
provision element is refused when the Consent is written (`unsupported`), so a grant never
means less than its author wrote.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any

Doc = dict[str, Any]
TABLE = Path(__file__).resolve().parents[2] / "profiles" / "access" / "family.json"


@dataclass(frozen=True)
class ConsentTable:
    scopes: frozenset[tuple[str, str]]
    access_actions: frozenset[tuple[str, str]]
    class_system: str
    provision_elements: frozenset[str]


@dataclass(frozen=True)
class Grant:
    """The types a grant shows: `types` (None = every type) minus `excluded`."""

    types: frozenset[str] | None
    excluded: frozenset[str] = frozenset()

    def union(self, other: Grant) -> Grant:
        """What either grant shows (two Consents for the same proxy)."""
        if self.types is not None and other.types is not None:
            return Grant((self.types - self.excluded) | (other.types - other.excluded))
        if self.types is None and other.types is None:
            return Grant(None, self.excluded & other.excluded)
        wide, narrow = (self, other) if self.types is None else (other, self)
        assert narrow.types is not None
        return Grant(None, wide.excluded - (narrow.types - narrow.excluded))

    def deny(self, classes: frozenset[str] | None) -> Grant:
        if classes is None:
            return NONE
        if self.types is None:
            return Grant(None, self.excluded | classes)
        return Grant(self.types - classes, self.excluded)

    def permit(self, classes: frozenset[str] | None) -> Grant:
        if classes is None:
            return Grant(None)
        if self.types is None:
            return Grant(None, self.excluded - classes)
        return Grant(self.types | classes, self.excluded - classes)

    @property
    def empty(self) -> bool:
        return self.types is not None and not (self.types - self.excluded)


NONE = Grant(frozenset())


def _pairs(group: Doc) -> frozenset[tuple[str, str]]:
    return frozenset((str(group["system"]), str(c)) for c in group["codes"])


def parse_table(raw: Doc) -> ConsentTable:
    """Build the table, failing loudly on a malformed one (the server must not start)."""
    c = raw["consents"]
    elements = c["provision_elements"]
    if not (isinstance(elements, list) and {"type", "actor"} <= set(elements)):
        raise ValueError("family.json: consents.provision_elements must list type and actor")
    table = ConsentTable(
        scopes=_pairs(c["scopes"]),
        access_actions=_pairs(c["access_actions"]),
        class_system=str(c["class_system"]),
        provision_elements=frozenset(elements),
    )
    if not table.scopes or not table.access_actions:
        raise ValueError("family.json: consents.scopes and access_actions need codes")
    return table


@lru_cache(maxsize=4)
def load_table(path: Path = TABLE) -> ConsentTable:
    return parse_table(json.loads(path.read_text()))


def _codings(concept: Any) -> set[tuple[str, str]]:
    if not isinstance(concept, dict):
        return set()
    return {
        (str(c.get("system", "")), str(c.get("code", "")))
        for c in concept.get("coding") or []
        if isinstance(c, dict)
    }


def period_covers(period: Any, today: date) -> bool:
    """True when a FHIR Period covers `today` (an open end covers; no period covers)."""
    if not isinstance(period, dict):
        return True
    day = today.isoformat()
    start, end = period.get("start"), period.get("end")
    if isinstance(start, str) and start[:10] > day:
        return False
    return not (isinstance(end, str) and end[:10] < day)


def _actors(provision: Doc) -> set[str]:
    out = set()
    for a in provision.get("actor") or []:
        ref = a.get("reference") if isinstance(a, dict) else None
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
            out.add(ref["reference"])
    return out


def _classes(provision: Doc, table: ConsentTable) -> frozenset[str] | None:
    """The resource types a provision is about; None when it names none (every type)."""
    found = [c for c in provision.get("class") or [] if isinstance(c, dict)]
    if not found:
        return None
    return frozenset(
        str(c.get("code")) for c in found if c.get("system") == table.class_system and c.get("code")
    )


def grant_of(
    consent: Doc, patient: str, actors: set[str], today: date, table: ConsentTable | None = None
) -> Grant | None:
    """What `consent` grants one of `actors` (RelatedPerson refs) on `patient`'s record today;
    None when it grants nothing (not active, another scope, not a permit, not today, not
    them, or an action other than access)."""
    table = table or load_table()
    if consent.get("status") != "active":
        return None
    ref = consent.get("patient")
    if not isinstance(ref, dict) or ref.get("reference") != patient:
        return None
    if not _codings(consent.get("scope")) & table.scopes:
        return None
    root = consent.get("provision")
    if not isinstance(root, dict) or root.get("type") != "permit":
        return None
    if not period_covers(root.get("period"), today) or not _actors(root) & actors:
        return None
    actions = [a for a in root.get("action") or [] if isinstance(a, dict)]
    if actions and not any(_codings(a) & table.access_actions for a in actions):
        return None
    classes = _classes(root, table)
    grant = _exceptions(root, Grant(classes), actors, today, table)
    return None if grant.empty else grant


def _exceptions(
    provision: Doc, grant: Grant, actors: set[str], today: date, table: ConsentTable
) -> Grant:
    for child in provision.get("provision") or []:
        if not isinstance(child, dict) or not period_covers(child.get("period"), today):
            continue
        named = _actors(child)
        if named and not named & actors:
            continue
        classes = _classes(child, table)
        grant = grant.deny(classes) if child.get("type") == "deny" else grant.permit(classes)
        grant = _exceptions(child, grant, actors, today, table)
    return grant


def unsupported(consent: Doc, table: ConsentTable | None = None) -> list[tuple[str | int, ...]]:
    """JSON paths of provision elements the table does not support
    (`("provision", "provision", 0, "securityLabel")`), and of classes that are not resource
    types: refused on write, never ignored."""
    table = table or load_table()
    out: list[tuple[str | int, ...]] = []

    def walk(p: Any, where: tuple[str | int, ...]) -> None:
        if not isinstance(p, dict):
            return
        out.extend((*where, k) for k in sorted(p) if k not in table.provision_elements)
        for i, c in enumerate(p.get("class") or []):
            if isinstance(c, dict) and c.get("system") != table.class_system:
                out.append((*where, "class", i))
        for i, child in enumerate(p.get("provision") or []):
            walk(child, (*where, "provision", i))

    walk(consent.get("provision"), ("provision",))
    return out
