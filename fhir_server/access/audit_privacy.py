"""What an AuditEvent may show the patients it names (profiles/access/audit.json).

An AuditEvent in a patient's compartment is that patient's "who looked at my record": it
must show them only what they may see. A search that names several patients, or a code
that says something sensitive (an STI test, a diagnosis of the kind that `meta.security`
sensitivity labels protect), would tell one patient about another, or put the sensitive
words in an event the labels do not cover. So such a request is recorded BALP-style as one
event per patient (https://profiles.ihe.net/ITI/BALP/, "one AuditEvent per patient"),
each naming that patient alone and without the query text, plus one event for auditors
with the query whole, in no patient's compartment. See docs/access.md, "Audit privacy".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from fhir_server.access.family import load_table as family_table

TABLE = Path(__file__).resolve().parents[2] / "profiles" / "access" / "audit.json"


@dataclass(frozen=True)
class AuditPrivacy:
    # (system, code) pairs whose appearance in a query makes the query sensitive.
    codes: frozenset[tuple[str, str]]

    @property
    def bare_codes(self) -> frozenset[str]:
        return frozenset(c for _, c in self.codes)


def parse_table(raw: Any) -> AuditPrivacy:
    """Fail fast on a malformed table: a typo must stop the server, not open a leak."""
    if not isinstance(raw, dict) or not isinstance(raw.get("sensitive_query_codes"), list):
        raise ValueError("profiles/access/audit.json needs a list 'sensitive_query_codes'")
    codes: set[tuple[str, str]] = set()
    for group in raw["sensitive_query_codes"]:
        system = group.get("system") if isinstance(group, dict) else None
        listed = group.get("codes") if isinstance(group, dict) else None
        if not isinstance(system, str) or not system or not isinstance(listed, list):
            raise ValueError(f"audit.json: each group needs a 'system' and 'codes': {group!r}")
        for code in listed:
            if not isinstance(code, str) or not code:
                raise ValueError(f"audit.json: a code of {system} is not a string: {code!r}")
            codes.add((system, code))
    # A query on a sensitive security label (`_security=...|STD`) is sensitive as well.
    codes |= set(family_table().labels)
    return AuditPrivacy(frozenset(codes))


@lru_cache(maxsize=4)
def load_table(path: Path = TABLE) -> AuditPrivacy:
    return parse_table(json.loads(path.read_text()))


def names_sensitive_code(query: str, table: AuditPrivacy | None = None) -> bool:
    """True when a value of the query names a listed code (`system|code` or a bare code,
    in a comma-separated list or behind a modifier such as `:not`)."""
    table = table or load_table()
    bare = table.bare_codes
    for _, value in parse_qsl(query, keep_blank_values=True):
        for v in value.split(","):
            system, sep, code = v.strip().rpartition("|")
            if (sep and (system, code) in table.codes) or (
                (not sep or not system) and code in bare
            ):
                return True
    return False
