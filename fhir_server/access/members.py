"""Member lists (Group.member) shown only as far as the caller may see the members.

A Group that lists every patient of the population is itself in each member's compartment,
so every patient may read it; its `member` entries would then name people the reader may
not see. The table (`profiles/access/clinicians.json`, `member_lists`) says which element of
which type lists references; each outgoing resource passes `redact` from the post-check
(`screen.py`), so read, search, include, history, `$everything` and `$export` all apply it.
https://hl7.org/fhir/R4/group.html
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

Doc = dict[str, Any]
TABLE = Path(__file__).resolve().parents[2] / "profiles" / "access" / "clinicians.json"


@dataclass(frozen=True)
class MemberList:
    list: str  # the repeating element ("member")
    reference: str  # its Reference element ("entity")
    count: str | None  # an element counting the entries ("quantity"), dropped on redaction


def parse_table(raw: Doc) -> dict[str, MemberList]:
    """Build the table, failing loudly on a malformed one (the server must not start)."""
    out: dict[str, MemberList] = {}
    for rt, spec in raw["member_lists"]["types"].items():
        if not (isinstance(spec.get("list"), str) and isinstance(spec.get("reference"), str)):
            raise ValueError(f"clinicians.json: member_lists.types.{rt} needs list and reference")
        count = spec.get("count")
        out[str(rt)] = MemberList(spec["list"], spec["reference"], str(count) if count else None)
    return out


@lru_cache(maxsize=4)
def load_table(path: Path = TABLE) -> dict[str, MemberList]:
    return parse_table(json.loads(path.read_text()))


def redact(resource: Doc, shown: Any, table: dict[str, MemberList] | None = None) -> None:
    """Remove, in place, the entries whose reference `shown("Type/id")` refuses (and those
    naming no local reference: their display or identifier may name a hidden person)."""
    spec = (table if table is not None else load_table()).get(str(resource.get("resourceType")))
    entries = resource.get(spec.list) if spec is not None else None
    if spec is None or not isinstance(entries, list):
        return
    kept = [e for e in entries if _shown(e, spec.reference, shown)]
    if len(kept) == len(entries):
        return
    if kept:
        resource[spec.list] = kept
    else:
        resource.pop(spec.list)
    if spec.count:
        resource.pop(spec.count, None)


def _shown(entry: Any, element: str, shown: Any) -> bool:
    ref = entry.get(element) if isinstance(entry, dict) else None
    target = ref.get("reference") if isinstance(ref, dict) else None
    if not isinstance(target, str) or target.count("/") != 1:
        return False
    return bool(shown(target))
