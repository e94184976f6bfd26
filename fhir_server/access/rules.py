"""One compartment rule, as a MongoDB filter and as the same test in memory.

Both forms live side by side so they cannot drift: the filter narrows every query (main,
chains, `_has`, includes, counts, reads), the in-memory form re-checks each outgoing
resource (defence in depth) and checks writes and old versions. A rule says: resources of
`compartment`, of `types` (None = any), carrying none of `hidden_keys` (index keys from the
search parser: `_security=<system>|<code>` labels, `sender=Patient/<id>` messages...).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

Doc = dict[str, Any]


@dataclass(frozen=True)
class CompartmentRule:
    compartment: str  # "Patient/<id>"
    band: str  # "self", "clinician", "child", "adolescent", "adult-granted", "managed"
    types: frozenset[str] | None
    hidden_keys: tuple[str, ...]
    # Types held back although `types` (None) would show them: a Consent's nested deny.
    excluded: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls,
        compartment: str,
        band: str,
        types: frozenset[str] | None,
        keys: Iterable[str],
        excluded: frozenset[str] = frozenset(),
    ) -> CompartmentRule:
        if types is not None:
            types, excluded = types - excluded, frozenset()
        return cls(compartment, band, types, tuple(dict.fromkeys(keys)), excluded)

    @property
    def plain(self) -> bool:
        """Everything in the compartment, nothing held back."""
        return self.types is None and not self.hidden_keys and not self.excluded

    @property
    def proxy(self) -> bool:
        return self.band not in ("self", "clinician")

    def to_filter(self, rt: str) -> Doc | None:
        """The rule for queries on `rt` ("*": any type); None when it shows nothing of `rt`."""
        if self.types is not None and rt != "*" and rt not in self.types:
            return None
        if rt in self.excluded:
            return None
        f: Doc = {"comp": self.compartment}
        if rt == "*" and self.types is not None:
            f["rt"] = {"$in": sorted(self.types)}
        elif rt == "*" and self.excluded:
            f["rt"] = {"$nin": sorted(self.excluded)}
        if self.hidden_keys:
            f["ix.k"] = {"$nin": list(self.hidden_keys)}
        return f

    def admits(self, rt: str, comps: Iterable[str], keys: Iterable[str]) -> bool:
        """`to_filter(rt)` evaluated on one resource's type, compartments and `ix.k`."""
        if (self.types is not None and rt not in self.types) or rt in self.excluded:
            return False
        if self.compartment not in set(comps):
            return False
        return not (set(self.hidden_keys) & set(keys))


@dataclass(frozen=True)
class DirectoryRule:
    """Directory types (Practitioner, Organization, Slot...) every confined token may read.

    `compartment_types` are those of them the compartment definition can place in a patient
    compartment (Schedule via `actor`): such a resource is directory data only when it is in
    no patient compartment. For the others no condition is needed, so their queries keep
    their indexes."""

    types: frozenset[str]
    compartment_types: frozenset[str]

    def to_filter(self, rt: str) -> Doc | None:
        """The directory part of queries on `rt` ("*": any type); None when it adds nothing,
        `{}` when every resource of `rt` is directory data."""
        if rt != "*":
            if rt not in self.types:
                return None
            return {"comp": {"$size": 0}} if rt in self.compartment_types else {}
        alts: list[Doc] = []
        free = sorted(self.types - self.compartment_types)
        if free:
            alts.append({"rt": {"$in": free}})
        placed = sorted(self.types & self.compartment_types)
        if placed:
            alts.append({"rt": {"$in": placed}, "comp": {"$size": 0}})
        if not alts:
            return None
        return alts[0] if len(alts) == 1 else {"$or": alts}

    def admits(self, rt: str, comps: Iterable[str]) -> bool:
        return rt in self.types and (rt not in self.compartment_types or not set(comps))


def rules_filter(
    rules: tuple[CompartmentRule, ...], rt: str, directory: DirectoryRule | None = None
) -> Doc:
    """One filter for all rules: plain compartments as one indexed `$in`, the rest as `$or`,
    and the directory types."""
    shared = directory.to_filter(rt) if directory is not None else None
    if shared == {}:
        return {}
    plain = [r.compartment for r in rules if r.plain]
    alts: list[Doc] = [{"comp": {"$in": plain}}] if plain else []
    comps = list(plain)
    for r in rules:
        if not r.plain:
            f = r.to_filter(rt)
            if f is not None:
                alts.append(f)
                comps.append(r.compartment)
    if shared is not None:
        alts.append(shared)
    if not alts:
        return {"_id": {"$in": []}}
    if len(alts) == 1:
        return alts[0]
    if shared is None:
        # Every alternative names one of these compartments: the superset clause changes no
        # answer and lets SecantusDB look the compartments up instead of scanning the type.
        return {"comp": {"$in": sorted(set(comps))}, "$or": alts}
    return {"$or": alts}


def rules_admit(
    rules: tuple[CompartmentRule, ...],
    rt: str,
    comps: Iterable[str],
    keys: Iterable[str],
    directory: DirectoryRule | None = None,
) -> bool:
    comps, keys = set(comps), set(keys)
    if directory is not None and directory.admits(rt, comps):
        return True
    return any(r.admits(rt, comps, keys) for r in rules)
