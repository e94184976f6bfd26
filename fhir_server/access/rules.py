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

    @classmethod
    def of(
        cls, compartment: str, band: str, types: frozenset[str] | None, keys: Iterable[str]
    ) -> CompartmentRule:
        return cls(compartment, band, types, tuple(dict.fromkeys(keys)))

    @property
    def plain(self) -> bool:
        """Everything in the compartment, nothing held back."""
        return self.types is None and not self.hidden_keys

    @property
    def proxy(self) -> bool:
        return self.band not in ("self", "clinician")

    def to_filter(self, rt: str) -> Doc | None:
        """The rule for queries on `rt` ("*": any type); None when it shows nothing of `rt`."""
        if self.types is not None and rt != "*" and rt not in self.types:
            return None
        f: Doc = {"comp": self.compartment}
        if rt == "*" and self.types is not None:
            f["rt"] = {"$in": sorted(self.types)}
        if self.hidden_keys:
            f["ix.k"] = {"$nin": list(self.hidden_keys)}
        return f

    def admits(self, rt: str, comps: Iterable[str], keys: Iterable[str]) -> bool:
        """`to_filter(rt)` evaluated on one resource's type, compartments and `ix.k`."""
        if self.types is not None and rt not in self.types:
            return False
        if self.compartment not in set(comps):
            return False
        return not (set(self.hidden_keys) & set(keys))


def rules_filter(rules: tuple[CompartmentRule, ...], rt: str) -> Doc:
    """One filter for all rules: plain compartments as one indexed `$in`, the rest as `$or`."""
    plain = [r.compartment for r in rules if r.plain]
    alts: list[Doc] = [{"comp": {"$in": plain}}] if plain else []
    for r in rules:
        if not r.plain:
            f = r.to_filter(rt)
            if f is not None:
                alts.append(f)
    if not alts:
        return {"_id": {"$in": []}}
    return alts[0] if len(alts) == 1 else {"$or": alts}


def rules_admit(
    rules: tuple[CompartmentRule, ...], rt: str, comps: Iterable[str], keys: Iterable[str]
) -> bool:
    comps, keys = set(comps), set(keys)
    return any(r.admits(rt, comps, keys) for r in rules)
