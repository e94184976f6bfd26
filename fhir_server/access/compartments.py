"""Compartments a resource inherits from the resources it points at
(profiles/access/compartments.json).

The R4 patient CompartmentDefinition (https://hl7.org/fhir/R4/compartmentdefinition-patient.html)
places a Provenance only by `Provenance.target.where(resolve() is Patient)`: the Provenance of
an Observation is in nobody's compartment, so a patient token never sees it. A type listed in
the table is also put in the patient compartments its listed reference elements' targets had
when it was stored; the Store looks those up in the writer's session (storage/store.py), so
a transaction that writes a target and its Provenance together works. See docs/access.md,
"Inherited compartments".

The table's `add` part extends the CompartmentDefinition itself: a type the definition lists
with no parameter (Task) is placed by the listed search parameters of its own, computed from
the resource alone like every other compartment parameter (`extend_registry`), so writes,
reads and every post-check see it without a lookup. See docs/access.md, "Added compartments".
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fhir_server.search.extract import LOCAL_REF

if TYPE_CHECKING:
    from fhir_server.search.registry import Registry

TABLE = Path(__file__).resolve().parents[2] / "profiles" / "access" / "compartments.json"
_ELEMENT = re.compile(r"^[a-z][A-Za-z0-9]*$")
_PARAM = re.compile(r"^[a-z][a-z0-9-]*$")


@dataclass(frozen=True)
class CompartmentInheritance:
    # Resource type -> the top-level reference elements whose targets it inherits from.
    elements: tuple[tuple[str, tuple[str, ...]], ...]
    # Resource type -> search parameters added to its patient compartment parameters.
    added: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # Inheriting types that also take their sources' sensitive labels (as access keys).
    label_types: frozenset[str] = frozenset()

    @property
    def types(self) -> frozenset[str]:
        return frozenset(rt for rt, _ in self.elements)

    def sources(self, resource: dict[str, Any]) -> list[str]:
        """`Type/id` keys of the stored resources `resource` inherits compartments from:
        local references only (a urn:uuid of a bundle is resolved before the write)."""
        rt = resource.get("resourceType")
        found: list[str] = []
        for name in dict(self.elements).get(str(rt), ()):
            value = resource.get(name)
            refs = value if isinstance(value, list) else [value]
            for ref in refs:
                target = ref.get("reference") if isinstance(ref, dict) else None
                m = LOCAL_REF.match(target) if isinstance(target, str) else None
                key = f"{m.group(1)}/{m.group(2)}" if m else None
                if key is not None and key not in found and key != f"{rt}/{resource.get('id')}":
                    found.append(key)
        return found


def parse_table(raw: Any, known_types: Iterable[str] | None = None) -> CompartmentInheritance:
    """Fail fast on a malformed table: a typo must stop the server, not hide a record."""
    inherit = raw.get("inherit") if isinstance(raw, dict) else None
    if not isinstance(inherit, dict):
        raise ValueError("profiles/access/compartments.json needs an object 'inherit'")
    added = raw.get("add", {})
    if not isinstance(added, dict):
        raise ValueError("profiles/access/compartments.json: 'add' must be an object")
    known = frozenset(known_types) if known_types is not None else None
    rows = _rows(inherit, known, _ELEMENT)
    labels = raw.get("labels", [])
    if not isinstance(labels, list) or not set(labels) <= {rt for rt, _ in rows}:
        raise ValueError(f"compartments.json: 'labels' must list types of 'inherit': {labels!r}")
    return CompartmentInheritance(rows, _rows(added, known, _PARAM), frozenset(labels))


def _rows(
    part: dict[str, Any], known: frozenset[str] | None, name: re.Pattern[str]
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    rows: list[tuple[str, tuple[str, ...]]] = []
    for rt, names in part.items():
        if known is not None and rt not in known:
            raise ValueError(f"compartments.json: {rt!r} is not a known resource type")
        if (
            not isinstance(names, list)
            or not names
            or not all(isinstance(n, str) and name.match(n) for n in names)
        ):
            raise ValueError(f"compartments.json: {rt} needs a non-empty list of names: {names!r}")
        rows.append((rt, tuple(dict.fromkeys(names))))
    return tuple(rows)


def extend_registry(registry: Registry, table: CompartmentInheritance) -> None:
    """Add the table's `add` parameters to the registry's patient compartment definition.
    Each must be a reference search parameter of its type that can name a Patient; anything
    else stops the server (a typo must not leave a patient's Tasks unreadable)."""
    for rt, codes in table.added:
        params = registry.params_for(rt)
        for code in codes:
            p = params.get(code)
            if p is None or p.type != "reference" or (p.target and "Patient" not in p.target):
                raise ValueError(
                    f"compartments.json: 'add' {rt}.{code} is not a reference search "
                    "parameter that can name a Patient"
                )
        have = registry.compartment_params(rt)
        registry.patient_compartment[rt] = (*have, *(c for c in codes if c not in have))


def compartment_types(registry: Registry, table: CompartmentInheritance | None) -> frozenset[str]:
    """Types that can sit in a patient compartment: those the (extended) definition places
    by a parameter, Patient itself, and those that inherit their targets' compartments
    (a Binary through its securityContext): what `$everything` and `$export` look through."""
    placed = {t for t, params in registry.patient_compartment.items() if params}
    return frozenset({*placed, "Patient", *(table.types if table is not None else ())})


@lru_cache(maxsize=4)
def load_table(
    path: Path = TABLE, known_types: frozenset[str] | None = None
) -> CompartmentInheritance:
    return parse_table(json.loads(path.read_text()), known_types)
