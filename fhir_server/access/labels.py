"""Security labels spelled one way, wherever they sit (https://hl7.org/fhir/R4/security-labels.html).

The policy hides resources by the labels `profiles/access/family.json` names
(`sensitive_labels`), matched as index keys. A label written with the old
`http://hl7.org/fhir/v3/Confidentiality` system, a trailing slash, no system, lower case, or
only in `DocumentReference.securityLabel` would not match: `normalised` rewrites each to the
table's spelling in `meta.security` (table `label_spellings`). It runs on the stored shape of
every write and in the indexer, so `fhir-server reindex` applies it to existing data too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

Doc = dict[str, Any]
TABLE = Path(__file__).resolve().parents[2] / "profiles" / "access" / "family.json"


@dataclass(frozen=True)
class LabelTable:
    # (system, code) of each sensitive label, keyed by (system, lower-case code).
    by_system: dict[tuple[str, str], tuple[str, str]]
    # A code alone, lower case -> its label, when one system only has it.
    by_code: dict[str, tuple[str, str]]
    aliases: dict[str, str]
    elements: dict[str, str]


def parse_table(raw: Doc) -> LabelTable:
    """Build the table, failing loudly on a malformed one (the server must not start)."""
    labels = [(str(g["system"]), str(c)) for g in raw["sensitive_labels"] for c in g["codes"]]
    spell = raw["label_spellings"]
    by_code: dict[str, list[tuple[str, str]]] = {}
    for s, c in labels:
        by_code.setdefault(c.lower(), []).append((s, c))
    aliases = {str(k).rstrip("/"): str(v) for k, v in spell["system_aliases"].items()}
    elements = {str(k): str(v) for k, v in spell["elements"].items()}
    if not all(isinstance(v, str) and v for v in aliases.values()):
        raise ValueError("family.json: label_spellings.system_aliases maps URLs to URLs")
    return LabelTable(
        by_system={(s, c.lower()): (s, c) for s, c in labels},
        by_code={k: v[0] for k, v in by_code.items() if len(v) == 1},
        aliases=aliases,
        elements=elements,
    )


@lru_cache(maxsize=4)
def load_table(path: Path = TABLE) -> LabelTable:
    return parse_table(json.loads(path.read_text()))


def canonical(system: Any, code: Any, table: LabelTable) -> tuple[str, str] | None:
    """The table's spelling of a label, or None when the coding is no sensitive label."""
    if not isinstance(code, str) or not code.strip():
        return None
    key = code.strip().lower()
    if not isinstance(system, str) or not system.strip():
        return table.by_code.get(key)
    sys = system.strip().rstrip("/")
    return table.by_system.get((table.aliases.get(sys, sys), key))


def _respelled(coding: Any, table: LabelTable) -> Any:
    if not isinstance(coding, dict):
        return coding
    found = canonical(coding.get("system"), coding.get("code"), table)
    if found is None or (coding.get("system"), coding.get("code")) == found:
        return coding
    return {**coding, "system": found[0], "code": found[1]}


def normalised(resource: Doc, table: LabelTable | None = None) -> Doc:
    """`resource` with its sensitive labels spelled as the table does, those of its type's
    label element added to `meta.security`; the same object when nothing changes."""
    table = table or load_table()
    meta = resource.get("meta")
    security = meta.get("security") if isinstance(meta, dict) else None
    codings = list(security) if isinstance(security, list) else []
    element = table.elements.get(str(resource.get("resourceType")))
    extra = resource.get(element) if element else None
    for concept in extra if isinstance(extra, list) else []:
        for c in concept.get("coding") or [] if isinstance(concept, dict) else []:
            if isinstance(c, dict) and canonical(c.get("system"), c.get("code"), table):
                codings.append({k: v for k, v in c.items() if k in ("system", "code", "display")})
    out: list[Any] = []
    seen: set[tuple[Any, Any]] = set()
    for c in codings:
        c = _respelled(c, table)
        key = (c.get("system"), c.get("code")) if isinstance(c, dict) else (None, id(c))
        if key not in seen:
            seen.add(key)
            out.append(c)
    if out == (security if isinstance(security, list) else []):
        return resource
    return {**resource, "meta": {**(meta if isinstance(meta, dict) else {}), "security": out}}
