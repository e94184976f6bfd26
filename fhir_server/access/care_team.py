"""Clinicians: the patients of the care teams a practitioner belongs to, and directory types.

The table is `profiles/access/clinicians.json`. Membership is FHIR data read on each request
(so removing a practitioner from a team takes effect at once), never code:

- the practitioner's active `PractitionerRole`s (`PractitionerRole.practitioner`) stand for
  it as well as `Practitioner/<id>` itself;
- only a care team the organisation maintains counts: one carrying the table's
  `maintained_by_organisation` tag (`meta.tag`), which the organisation's loaders set and the
  write rules refuse from confined tokens, so a CareTeam a patient or clinician POSTs never
  confers access;
- an active `CareTeam` (status in `care_team_statuses`, `period` covering today) whose
  `participant.member` names one of those (the participant's own `period` covering today)
  makes its `subject` Patient visible; a team that is itself a member of another team
  passes the membership on (the seed's clinic nurse pool sits in each patient's team), up
  to `max_nesting` levels.

Directory types (Practitioner, Organization, Location, Slot...) describe the health system,
not a patient: every confined token may read them unless the resource is in a patient
compartment (then the compartment rules decide). See docs/access.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any

from fhir_server.access.consent import period_covers
from fhir_server.access.family import reference
from fhir_server.access.policy_epochs import Reads
from fhir_server.storage.store import as_store

Doc = dict[str, Any]
TABLE = Path(__file__).resolve().parents[2] / "profiles" / "access" / "clinicians.json"


@dataclass(frozen=True)
class ClinicianTable:
    care_team_statuses: frozenset[str]
    max_nesting: int
    break_glass_header: str
    min_reason: int
    max_reason: int
    min_reason_words: int
    directory_types: frozenset[str]
    # (system, code) of the `meta.tag` that marks a care team the organisation maintains.
    maintained_tag: tuple[str, str]

    def maintained(self, team: Doc) -> bool:
        meta = team.get("meta")
        tags = meta.get("tag") if isinstance(meta, dict) else None
        return any(
            isinstance(t, dict) and (t.get("system"), t.get("code")) == self.maintained_tag
            for t in tags or []
        )


def parse_table(raw: Doc) -> ClinicianTable:
    """Build the table, failing loudly on a malformed one (the server must not start)."""
    statuses = raw["care_team_statuses"]
    types = raw["directory"]["types"]
    if not (isinstance(statuses, list) and all(isinstance(s, str) for s in statuses)):
        raise ValueError("clinicians.json: care_team_statuses must be a list of codes")
    if not (isinstance(types, list) and all(isinstance(t, str) for t in types)):
        raise ValueError("clinicians.json: directory.types must be a list of resource types")
    nesting = int(raw["max_nesting"])
    glass = raw["break_glass"]
    lo, hi = int(glass["min_reason_length"]), int(glass["max_reason_length"])
    words = int(glass["min_reason_words"])
    if nesting < 1 or not 1 <= lo <= hi or words < 1:
        raise ValueError(
            "clinicians.json: max_nesting >= 1, 1 <= min <= max reason length, min words >= 1"
        )
    marker = raw["maintained_by_organisation"]
    tag = (marker["system"], marker["code"])
    if not all(isinstance(x, str) and x for x in tag):
        raise ValueError("clinicians.json: maintained_by_organisation needs a system and a code")
    return ClinicianTable(
        maintained_tag=(str(tag[0]), str(tag[1])),
        care_team_statuses=frozenset(statuses),
        max_nesting=nesting,
        break_glass_header=str(glass["header"]).lower(),
        min_reason=lo,
        max_reason=hi,
        min_reason_words=words,
        directory_types=frozenset(types),
    )


@lru_cache(maxsize=4)
def load_table(path: Path = TABLE) -> ClinicianTable:
    return parse_table(json.loads(path.read_text()))


def _active_role(role: Doc, today: date) -> bool:
    return role.get("active") is not False and period_covers(role.get("period"), today)


def _members(team: Doc, today: date) -> set[str]:
    """References of the team's participants whose participation covers today."""
    out = set()
    for p in team.get("participant") or []:
        if isinstance(p, dict) and period_covers(p.get("period"), today):
            ref = reference(p.get("member"))
            if ref:
                out.add(ref)
    return out


async def care_team_patients(
    db: Any, table: ClinicianTable, practitioner: str, today: date
) -> tuple[str, ...]:
    """`Patient/<id>` of every active care team `practitioner` belongs to, sorted."""
    _, patients = await memberships(db, table, practitioner, today)
    return patients


async def memberships(
    db: Any, table: ClinicianTable, practitioner: str, today: date
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(`CareTeam/<id>` of every active maintained team `practitioner` belongs to, directly,
    through a PractitionerRole or through a nested team; the `Patient/<id>` subjects of
    those teams), both sorted. A pool inbox is the messages to one of these teams."""
    col = db if isinstance(db, Reads) else as_store(db, None)
    roles = await col.resources_matching(
        {"rt": "PractitionerRole", "ix.k": f"practitioner={practitioner}"}
    )
    frontier = {practitioner} | {
        f"PractitionerRole/{r['id']}" for r in roles if _active_role(r, today)
    }
    seen: set[str] = set()
    patients: set[str] = set()
    for _ in range(table.max_nesting):
        keys = sorted(f"participant={m}" for m in frontier)
        teams = await col.resources_matching({"rt": "CareTeam", "ix.k": {"$in": keys}})
        joined: set[str] = set()
        for team in teams:
            ref = f"CareTeam/{team.get('id')}"
            if ref in seen or not table.maintained(team) or not team_active(team, table, today):
                continue
            if not _members(team, today) & frontier:
                continue  # the key matched a participant whose period has ended
            seen.add(ref)
            joined.add(ref)
            subject = reference(team.get("subject"))
            if subject and subject.startswith("Patient/"):
                patients.add(subject)
        if not joined:
            break
        frontier = joined
    return tuple(sorted(seen)), tuple(sorted(patients))


def team_active(team: Doc, table: ClinicianTable, today: date) -> bool:
    return team.get("status") in table.care_team_statuses and period_covers(
        team.get("period"), today
    )
