"""The secure-messaging table (`profiles/portal/messaging.json`), parsed fail-fast.

See docs/portal.md, "Secure messaging".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

Doc = dict[str, Any]
TABLE = Path(__file__).resolve().parents[3] / "profiles" / "portal" / "messaging.json"


@dataclass(frozen=True)
class MessagingTable:
    category_system: str
    categories: dict[str, str]  # code -> display
    open_status: str
    closed_statuses: frozenset[str]
    message_statuses: frozenset[str]
    member_types: frozenset[str]
    # Whom a clinician may address besides the patient's own recipients.
    clinician_subject: bool
    clinician_thread_senders: bool
    clinician_care_teams: bool
    fixed: tuple[str, ...]
    read_element: str

    def category_of(self, header: Doc) -> str | None:
        """The table's category code a header carries, if any."""
        for concept in header.get("category") or []:
            for c in (concept or {}).get("coding") or [] if isinstance(concept, dict) else []:
                if (
                    isinstance(c, dict)
                    and c.get("system") == self.category_system
                    and c.get("code") in self.categories
                ):
                    return str(c["code"])
        return None


def _codes(raw: Any, where: str) -> frozenset[str]:
    if not (isinstance(raw, list) and raw and all(isinstance(x, str) and x for x in raw)):
        raise ValueError(f"messaging.json: {where} must be a non-empty list of strings")
    return frozenset(raw)


def _flag(raw: Doc, key: str, where: str) -> bool:
    value = raw.get(key)
    if not isinstance(value, bool):
        raise ValueError(f"messaging.json: {where}.{key} must be true or false")
    return value


def parse_table(raw: Doc, known_types: frozenset[str] | None = None) -> MessagingTable:
    """Build the table, failing loudly on a malformed one (the server must not start)."""
    cats = raw["categories"]
    system, codes = cats["system"], cats["codes"]
    if not (isinstance(system, str) and system.startswith(("http://", "https://", "urn:"))):
        raise ValueError("messaging.json: categories.system must be a URI")
    if not (
        isinstance(codes, dict)
        and codes
        and all(isinstance(k, str) and k and isinstance(v, str) for k, v in codes.items())
    ):
        raise ValueError("messaging.json: categories.codes must map codes to displays")
    header = raw["header"]
    open_status = header["open_status"]
    if not isinstance(open_status, str) or not open_status:
        raise ValueError("messaging.json: header.open_status must be a status code")
    closed = _codes(header["closed_statuses"], "header.closed_statuses")
    if open_status in closed:
        raise ValueError("messaging.json: header.open_status cannot also close a thread")
    members = _codes(raw["recipients"]["member_types"], "recipients.member_types")
    if known_types is not None and not members <= known_types:
        raise ValueError(f"messaging.json: unknown member types {sorted(members - known_types)}")
    clin = raw["clinician_recipients"]
    fixed = raw["fixed"]["elements"]
    _codes(fixed, "fixed.elements")
    read = raw["read_state"]["element"]
    if not isinstance(read, str) or not read or read in fixed:
        raise ValueError("messaging.json: read_state.element must be an element not fixed")
    return MessagingTable(
        category_system=system,
        categories=dict(codes),
        open_status=open_status,
        closed_statuses=closed,
        message_statuses=_codes(raw["message"]["statuses"], "message.statuses"),
        member_types=members,
        clinician_subject=_flag(clin, "subject", "clinician_recipients"),
        clinician_thread_senders=_flag(clin, "thread_senders", "clinician_recipients"),
        clinician_care_teams=_flag(clin, "care_teams", "clinician_recipients"),
        fixed=tuple(fixed),
        read_element=read,
    )


@lru_cache(maxsize=4)
def load_table(path: Path = TABLE, known_types: frozenset[str] | None = None) -> MessagingTable:
    return parse_table(json.loads(path.read_text()), known_types)
