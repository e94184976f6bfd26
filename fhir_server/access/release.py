"""Results release: when a patient (and the proxies the family table permits) may see a
result, as data (profiles/access/release.json) and as the same test in the database and in
memory.

A result is visible to patient and proxy tokens from one instant on, stored beside it in its
access keys as `ak.r` (stored_keys.py), absent when it is visible at once:

- a status the table does not release (preliminary unless `show_preliminary`, registered,
  entered-in-error...): never (`FOREVER`), until a version with a released status is stored;
- a hold (the `result-hold` extension: a lawful reason and a mandatory expiry): its expiry.

The query side is one clause ANDed into every query a patient or proxy token makes on these
types, `{"ak.r": {"$not": {"$gt": now}}}` (missing, or passed), with `now` from
fhir_server/clock.py, so an expired hold releases by itself on the next read, with no job and
no write; the post-check (`admits`) tests the same stored instant. Clinicians are not
narrowed by it. See docs/access.md, "Results release".
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

Doc = dict[str, Any]
TABLE = Path(__file__).resolve().parents[2] / "profiles" / "access" / "release.json"
# The statuses the law releases at once (21st Century Cures Act, information blocking): a
# table that leaves one out would delay every such result for everyone.
LAWFUL_RELEASED = ("final", "amended", "corrected", "appended")
# A hidden status never releases by time: later than any expiry, and still a BSON date.
FOREVER = datetime(9999, 12, 31, tzinfo=UTC)
FIELD = "ak.r"  # where the stored instant lives (the access keys every read projects)
KEYS = frozenset(
    {
        "note",
        "types",
        "status_elements",
        "released_statuses",
        "show_preliminary",
        "absent_status_released",
        "category_elements",
        "attachments",
        "hold",
        "patient_delays",
        "default_holds",
    }
)


@dataclass(frozen=True)
class Hold:
    """A hold as a result carries it (the `result-hold` extension)."""

    reason: str
    expires: datetime


@dataclass(frozen=True)
class ReleaseTable:
    types: frozenset[str]
    status_elements: Mapping[str, str]
    released: frozenset[str]
    absent_status_released: bool
    category_elements: Mapping[str, tuple[str, ...]]
    extension: str
    max_hold: timedelta
    reason_system: str
    reasons: Mapping[str, str]  # code -> display
    patient_request_reason: str
    max_delay: timedelta
    # category -> the (system, code) pairs that put a result in it
    categories: Mapping[str, frozenset[tuple[str, str]]]
    # The type of a result's attachments (Binary) and, per result type, the dotted paths of
    # the attachment urls: the Binaries named there are hidden as long as the result.
    attachment_type: str = "Binary"
    attachment_urls: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def guarded_types(self) -> frozenset[str]:
        """Every type whose queries by patient and proxy tokens test the release instant."""
        return self.types | {self.attachment_type}

    def attachments_of(self, rt: str, resource: Doc | None) -> list[str]:
        """The ids of the `Binary/<id>` a result's attachments name (relative urls only:
        an absolute one is not this server's to hide)."""
        out: list[str] = []
        for path in self.attachment_urls.get(rt, ()):
            for url in _values(resource, path.split(".")):
                head, _, rid = url.partition("/") if isinstance(url, str) else ("", "", "")
                if head == self.attachment_type and rid and "/" not in rid:
                    out.append(rid)
        return list(dict.fromkeys(out))

    # --- statuses and holds ----------------------------------------------------------

    def released_status(self, rt: str, resource: Doc) -> bool:
        status = resource.get(self.status_elements.get(rt, "status"))
        if status is None:
            return self.absent_status_released
        return status in self.released

    def hold_of(self, resource: Doc) -> Hold | None:
        """The hold the resource carries, or None (also for a malformed one, which the
        write path refuses: release_workflow.py)."""
        for ext in resource.get("extension") or []:
            if isinstance(ext, dict) and ext.get("url") == self.extension:
                return _parse_hold(ext)
        return None

    def hidden_until(self, rt: str, resource: Doc | None) -> datetime | None:
        """From when patient and proxy tokens see this version: None = at once."""
        if rt not in self.types or not isinstance(resource, dict):
            return None
        if not self.released_status(rt, resource):
            return FOREVER
        hold = self.hold_of(resource)
        return hold.expires if hold is not None else None

    def hold_extension(self, reason: str, expires: datetime) -> Doc:
        return {
            "url": self.extension,
            "extension": [
                {
                    "url": "reason",
                    "valueCoding": {
                        "system": self.reason_system,
                        "code": reason,
                        "display": self.reasons[reason],
                    },
                },
                {"url": "expires", "valueDateTime": _instant(expires)},
            ],
        }

    def without_hold(self, resource: Doc) -> Doc:
        ext = [
            e
            for e in resource.get("extension") or []
            if not (isinstance(e, dict) and e.get("url") == self.extension)
        ]
        out = {k: v for k, v in resource.items() if k != "extension"}
        if ext:
            out["extension"] = ext
        return out

    # --- categories (a patient's own delay) -------------------------------------------

    def categories_of(self, rt: str, resource: Doc) -> frozenset[str]:
        codings: set[tuple[str, str]] = set()
        for element in self.category_elements.get(rt, ()):
            value = resource.get(element)
            for concept in value if isinstance(value, list) else [value]:
                for c in (concept or {}).get("coding") or [] if isinstance(concept, dict) else []:
                    if isinstance(c, dict):
                        codings.add((str(c.get("system", "")), str(c.get("code", ""))))
        return frozenset(name for name, cs in self.categories.items() if cs & codings)


def _values(node: Any, parts: list[str]) -> list[Any]:
    if not parts:
        return [node]
    if isinstance(node, list):
        return [v for item in node for v in _values(item, parts)]
    if not isinstance(node, dict):
        return []
    return _values(node.get(parts[0]), parts[1:]) if parts[0] in node else []


def query_clause(now: datetime) -> Doc:
    """What a patient or proxy token's queries on the result types AND in."""
    return {FIELD: {"$not": {"$gt": now}}}


def stored_instant(stored: Mapping[str, Any] | None) -> tuple[bool, datetime | None]:
    """(known, instant) from a stored document's access keys: known is False when there is
    no `ak` to read (the caller then computes from the resource)."""
    ak = stored.get("ak") if stored is not None else None
    if not isinstance(ak, Mapping):
        return False, None
    r = ak.get("r")
    return True, _aware(r) if isinstance(r, datetime) else None


def admits(
    table: ReleaseTable,
    rt: str,
    resource: Doc,
    stored: Mapping[str, Any] | None,
    now: datetime,
) -> bool:
    """`query_clause(now)` on one resource: its stored instant, or computed from it."""
    if rt not in table.guarded_types:
        return True
    known, until = stored_instant(stored)
    if not known:
        if rt not in table.types:
            return True  # an attachment carries its result's instant only as stored
        until = table.hidden_until(rt, resource)
    return until is None or until <= now


# --- parsing -----------------------------------------------------------------------------


def _instant(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def parse_instant(raw: Any) -> datetime | None:
    """A FHIR dateTime with a time and zone (a hold's expiry must name an instant)."""
    if not isinstance(raw, str) or "T" not in raw:
        return None
    try:
        t = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t.astimezone(UTC) if t.tzinfo is not None else None


def _parse_hold(ext: Doc) -> Hold | None:
    reason = expires = None
    for sub in ext.get("extension") or []:
        if not isinstance(sub, dict):
            continue
        if sub.get("url") == "reason" and isinstance(sub.get("valueCoding"), dict):
            reason = sub["valueCoding"].get("code")
        elif sub.get("url") == "expires":
            expires = parse_instant(sub.get("valueDateTime"))
    if not isinstance(reason, str) or expires is None:
        return None
    return Hold(reason, expires)


def _fail(msg: str) -> ValueError:
    return ValueError(f"profiles/access/release.json: {msg}")


def _strs(raw: Any, where: str) -> list[str]:
    if not isinstance(raw, list) or not raw or not all(isinstance(x, str) and x for x in raw):
        raise _fail(f"{where} must be a non-empty list of strings")
    return list(raw)


def _days(raw: Any, where: str, ceiling: int) -> timedelta:
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= ceiling:
        raise _fail(f"{where} must be a whole number of days from 1 to {ceiling}")
    return timedelta(days=raw)


def _codings(raw: Any, where: str) -> frozenset[tuple[str, str]]:
    if not isinstance(raw, list) or not raw:
        raise _fail(f"{where} must be a non-empty list of codings")
    out = set()
    for c in raw:
        if not isinstance(c, dict) or not all(
            isinstance(c.get(k), str) and c.get(k) for k in ("system", "code")
        ):
            raise _fail(f"{where}: each coding needs a 'system' and a 'code': {c!r}")
        out.add((c["system"], c["code"]))
    return frozenset(out)


def parse_table(raw: Any, known_types: frozenset[str] | None = None) -> ReleaseTable:
    """Fail fast: a typo must stop the server, never hold results nobody meant to hold."""
    if not isinstance(raw, dict):
        raise _fail("must be an object")
    unknown = sorted(set(raw) - KEYS)
    if unknown:
        raise _fail(f"unknown keys {unknown}")
    if raw.get("default_holds"):
        raise _fail(
            "'default_holds' must be empty: a delay of a whole category of results for "
            "everyone is information blocking (45 CFR 171.103); hold one result, for a "
            "stated lawful reason, with an expiry"
        )
    types = frozenset(_strs(raw.get("types"), "'types'"))
    if known_types is not None and not types <= known_types:
        raise _fail(f"'types' names unknown resource types {sorted(types - known_types)}")
    statuses = _strs(raw.get("released_statuses"), "'released_statuses'")
    missing = [s for s in LAWFUL_RELEASED if s not in statuses]
    if missing:
        raise _fail(
            f"'released_statuses' must include {missing}: leaving a released status out "
            "would hold every such result for everyone (information blocking)"
        )
    preliminary = raw.get("show_preliminary")
    absent = raw.get("absent_status_released")
    if not isinstance(preliminary, bool) or not isinstance(absent, bool):
        raise _fail("'show_preliminary' and 'absent_status_released' must be true or false")
    elements = raw.get("status_elements")
    cats = raw.get("category_elements")
    if not isinstance(elements, dict) or set(elements) != types:
        raise _fail("'status_elements' must name the status element of each of 'types'")
    if not all(isinstance(v, str) and v for v in elements.values()):
        raise _fail("'status_elements' values must be element names")
    if not isinstance(cats, dict) or set(cats) != types:
        raise _fail("'category_elements' must list the category elements of each of 'types'")
    hold = raw.get("hold")
    if not isinstance(hold, dict):
        raise _fail("'hold' must be an object")
    reasons: dict[str, str] = {}
    for r in hold.get("reasons") or []:
        if not isinstance(r, dict) or not isinstance(r.get("code"), str) or not r["code"]:
            raise _fail(f"each hold reason needs a 'code' and a 'display': {r!r}")
        if not isinstance(r.get("display"), str) or not r["display"]:
            raise _fail(f"hold reason {r['code']!r} needs a 'display' (the lawful ground)")
        reasons[r["code"]] = r["display"]
    if not reasons:
        raise _fail("'hold.reasons' must list the lawful reasons a hold may state")
    patient_reason = hold.get("patient_request_reason")
    if patient_reason not in reasons:
        raise _fail("'hold.patient_request_reason' must be one of 'hold.reasons'")
    for key in ("extension", "reason_system"):
        if not isinstance(hold.get(key), str) or not hold[key].startswith("http"):
            raise _fail(f"'hold.{key}' must be a canonical URL")
    att = raw.get("attachments")
    if not isinstance(att, dict) or not isinstance(att.get("urls"), dict):
        raise _fail("'attachments' needs a 'type' and 'urls' per result type")
    if not isinstance(att.get("type"), str) or att["type"] in types:
        raise _fail("'attachments.type' must name a type that is not itself a result type")
    urls = att["urls"]
    if not set(urls) <= types or not all(
        isinstance(v, list) and all(isinstance(x, str) and x for x in v) for v in urls.values()
    ):
        raise _fail("'attachments.urls' maps result types to lists of dotted paths")
    delays = raw.get("patient_delays")
    if not isinstance(delays, dict) or not isinstance(delays.get("categories"), dict):
        raise _fail("'patient_delays' needs 'max_days' and 'categories'")
    return ReleaseTable(
        types=types,
        status_elements=dict(elements),
        released=frozenset(statuses) | ({"preliminary"} if preliminary else set()),
        absent_status_released=absent,
        category_elements={t: tuple(_strs(cats[t], f"category_elements.{t}")) for t in types},
        extension=hold["extension"],
        max_hold=_days(hold.get("max_days"), "'hold.max_days'", 365),
        reason_system=hold["reason_system"],
        reasons=reasons,
        patient_request_reason=str(patient_reason),
        max_delay=_days(delays.get("max_days"), "'patient_delays.max_days'", 90),
        categories={
            str(name): _codings(cs, f"patient_delays.categories.{name}")
            for name, cs in delays["categories"].items()
        },
        attachment_type=att["type"],
        attachment_urls={t: tuple(v) for t, v in urls.items()},
    )


@lru_cache(maxsize=4)
def load_table(path: Path = TABLE) -> ReleaseTable:
    return parse_table(json.loads(path.read_text()))
