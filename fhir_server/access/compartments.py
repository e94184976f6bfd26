"""Compartments a resource inherits from the resources it points at
(profiles/access/compartments.json).

The R4 patient CompartmentDefinition (https://hl7.org/fhir/R4/compartmentdefinition-patient.html)
places a Provenance only by `Provenance.target.where(resolve() is Patient)`: the Provenance of
an Observation is in nobody's compartment, so a patient token never sees it. A type listed in
the table is also put in the patient compartments its listed reference elements' targets had
when it was stored; the Store looks those up in the writer's session (storage/store.py), so
a transaction that writes a target and its Provenance together works. See docs/access.md,
"Inherited compartments".
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from fhir_server.search.extract import LOCAL_REF

TABLE = Path(__file__).resolve().parents[2] / "profiles" / "access" / "compartments.json"
_ELEMENT = re.compile(r"^[a-z][A-Za-z0-9]*$")


@dataclass(frozen=True)
class CompartmentInheritance:
    # Resource type -> the top-level reference elements whose targets it inherits from.
    elements: tuple[tuple[str, tuple[str, ...]], ...]

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
    known = frozenset(known_types) if known_types is not None else None
    rows: list[tuple[str, tuple[str, ...]]] = []
    for rt, names in inherit.items():
        if known is not None and rt not in known:
            raise ValueError(f"compartments.json: {rt!r} is not a known resource type")
        if (
            not isinstance(names, list)
            or not names
            or not all(isinstance(n, str) and _ELEMENT.match(n) for n in names)
        ):
            raise ValueError(
                f"compartments.json: {rt} needs a non-empty list of element names: {names!r}"
            )
        rows.append((rt, tuple(dict.fromkeys(names))))
    return CompartmentInheritance(tuple(rows))


@lru_cache(maxsize=4)
def load_table(
    path: Path = TABLE, known_types: frozenset[str] | None = None
) -> CompartmentInheritance:
    return parse_table(json.loads(path.read_text()), known_types)
