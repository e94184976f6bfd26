"""Families and proxies: the rule a user gets on each patient compartment, computed per request.

The table is `profiles/access/family.json` (data a policy owner changes). Relationships are
FHIR data read at request time, never code:

- the user's `Patient.link` points at the `RelatedPerson`s that stand for the user towards
  each dependent (`RelatedPerson.patient`), with a v3-RoleCode relationship (FTH, MTH, GUARD...);
- the age of the dependent comes from `Patient.birthDate` on the day of the request;
- from `adult_from` on, a proxy needs an active privacy `Consent` whose provisions grant that
  RelatedPerson something today (consent.py: scope, permit, period, actor, action, class and
  nested exceptions); revoking it (any other status) takes effect on the next request.

The token's `acts_for` only lists candidates: a candidate without the data above gets nothing.
See docs/access.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any

from fhir_server.access.consent import Grant, grant_of, period_covers
from fhir_server.access.policy_epochs import Reads
from fhir_server.access.rules import CompartmentRule
from fhir_server.storage.store import as_store

Doc = dict[str, Any]
TABLE = Path(__file__).resolve().parents[2] / "profiles" / "access" / "family.json"
SELF = "self"
MANAGED_LEVEL = "managed"


@dataclass(frozen=True)
class Band:
    """What a proxy sees of one dependent: the types (None = all) and what stays hidden."""

    name: str
    types: frozenset[str] | None
    hide_labelled: bool
    hide_care_team_messages: bool


@dataclass(frozen=True)
class FamilyTable:
    restricted_from: int
    adult_from: int
    bands: dict[str, Band]
    guardian_system: str
    guardian_codes: frozenset[str]
    basic_levels: frozenset[str]
    # (system, code) pairs of meta.security labels that mark a resource sensitive.
    labels: tuple[tuple[str, str], ...]
    # Per message type, the reference parameters that name its sender and recipients.
    message_params: dict[str, tuple[str, ...]]

    def band_for_age(self, age: int) -> str:
        if age < self.restricted_from:
            return "child"
        if age < self.adult_from:
            return "adolescent"
        return "adult-granted"


def parse_table(raw: Doc) -> FamilyTable:
    """Build the table, failing loudly on a malformed one (the server must not start)."""
    ages = raw["ages"]
    restricted_from, adult_from = int(ages["restricted_from"]), int(ages["adult_from"])
    if not 0 <= restricted_from <= adult_from:
        raise ValueError("family.json: ages must satisfy 0 <= restricted_from <= adult_from")
    bands = {}
    for name in ("child", "adolescent", "adult-granted", "managed"):
        b = raw["bands"][name]
        types = b["types"]
        if types != "*" and not (
            isinstance(types, list) and all(isinstance(t, str) for t in types)
        ):
            raise ValueError(f"family.json: bands.{name}.types must be '*' or a list of types")
        bands[name] = Band(
            name=name,
            types=None if types == "*" else frozenset(types),
            hide_labelled=bool(b["hide_labelled"]),
            hide_care_team_messages=bool(b["hide_care_team_messages"]),
        )
    labels = tuple(
        (str(group["system"]), str(code))
        for group in raw["sensitive_labels"]
        for code in group["codes"]
    )
    if not labels:
        raise ValueError("family.json: sensitive_labels is empty")
    guardians = raw["guardian_relationships"]
    messages = raw["care_team_messages"]["types"]
    return FamilyTable(
        restricted_from=restricted_from,
        adult_from=adult_from,
        bands=bands,
        guardian_system=str(guardians["system"]),
        guardian_codes=frozenset(guardians["codes"]),
        basic_levels=frozenset(raw["labels_hidden_from_basic_logins"]),
        labels=labels,
        message_params={str(k): tuple(v) for k, v in messages.items()},
    )


@lru_cache(maxsize=4)
def load_table(path: Path = TABLE) -> FamilyTable:
    return parse_table(json.loads(path.read_text()))


# --- pure helpers on FHIR data ----------------------------------------------------------


def age_on(birth_date: str | None, today: date) -> int | None:
    """Whole years on `today`; a partial birthDate counts from its earliest day (oldest
    possible age: the more restrictive band). None when unknown."""
    if not isinstance(birth_date, str) or len(birth_date) < 4 or not birth_date[:4].isdigit():
        return None
    parts = birth_date[:10].split("-")
    try:
        y = int(parts[0])
        m = int(parts[1]) if len(parts) > 1 else 1
        d = int(parts[2]) if len(parts) > 2 else 1
        born = date(y, m, d)
    except ValueError:
        return None
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def reference(node: Any) -> str | None:
    if isinstance(node, dict) and isinstance(node.get("reference"), str):
        return str(node["reference"])
    return None


def active_relatedperson(rp: Doc, today: date) -> bool:
    return rp.get("active") is not False and period_covers(rp.get("period"), today)


def is_guardian(rp: Doc, table: FamilyTable) -> bool:
    for concept in rp.get("relationship") or []:
        for coding in (concept or {}).get("coding") or []:
            if coding.get("system") == table.guardian_system and coding.get("code") in (
                table.guardian_codes
            ):
                return True
    return False


def consent_grants(consent: Doc, patient: str, actors: set[str], today: date) -> bool:
    """An active privacy Consent for `patient` whose provisions grant one of `actors`
    (RelatedPerson refs) something today (consent.py reads the provisions)."""
    return grant_of(consent, patient, actors, today) is not None


def _grant(consents: list[Doc], patient: str, actors: set[str], today: date) -> Grant | None:
    """What all of a proxy's Consents on `patient` grant together; None for nothing."""
    grants = [g for c in consents if (g := grant_of(c, patient, actors, today)) is not None]
    if not grants:
        return None
    out = grants[0]
    for g in grants[1:]:
        out = out.union(g)
    return out


# --- the per-request resolution ---------------------------------------------------------


async def compartment_rules(
    db: Any,
    table: FamilyTable,
    *,
    fhir_user: str,
    level: str | None,
    compartments: tuple[str, ...],
    hidden_keys: Any,
    today: date,
) -> tuple[CompartmentRule, ...]:
    """The rule for each compartment a Patient user's token names (those with none are left
    out). `hidden_keys(band, patient)` gives the index keys a band hides (built by the
    policy from the search parser)."""
    col = db if isinstance(db, Reads) else as_store(db, None)
    wanted = sorted(set(compartments) | {fhir_user})
    patients = {
        f"Patient/{p['id']}": p for p in await col.resources_matching({"_id": {"$in": wanted}})
    }
    managed = level == MANAGED_LEVEL
    basic = level in table.basic_levels
    dependents = [c for c in compartments if managed or c != fhir_user]
    # RelatedPersons standing for the user: Patient.link; for a Managed login (operated by a
    # manager who is no Patient here) any RelatedPerson of the beneficiary, the Consent
    # deciding which one was appointed.
    if managed:
        rps = await col.resources_matching(
            {"rt": "RelatedPerson", "ix.k": {"$in": [f"patient={d}" for d in dependents]}},
        )
    else:
        user = patients.get(fhir_user) or {}
        links = [reference(link.get("other")) for link in user.get("link") or []]
        rp_ids = [r for r in links if r and r.startswith("RelatedPerson/")]
        rps = await col.resources_matching({"_id": {"$in": rp_ids}}) if rp_ids else []
    by_patient: dict[str, list[Doc]] = {}
    for rp in rps:
        target = reference(rp.get("patient"))
        if target and active_relatedperson(rp, today):
            by_patient.setdefault(target, []).append(rp)
    consents = (
        await col.resources_matching(
            {"rt": "Consent", "ix.k": {"$in": [f"patient={d}" for d in dependents]}}
        )
        if dependents
        else []
    )
    rules: list[CompartmentRule] = []
    for comp in compartments:
        if comp == fhir_user and not managed:
            band = Band(SELF, None, hide_labelled=basic, hide_care_team_messages=False)
            rules.append(CompartmentRule.of(comp, band.name, None, hidden_keys(band, comp)))
            continue
        found = _band_of(
            table, comp, patients.get(comp), by_patient.get(comp, []), consents, managed, today
        )
        if found is None:
            continue
        name, grant = found
        band = table.bands[name]
        types, excluded = band.types, frozenset[str]()
        if grant is not None:
            # A Consent's classes and exceptions narrow the band, never widen it.
            types = (
                types
                if grant.types is None
                else (grant.types if types is None else types & grant.types)
            )
            excluded = grant.excluded
        rules.append(CompartmentRule.of(comp, name, types, hidden_keys(band, comp), excluded))
    return tuple(rules)


def _band_of(
    table: FamilyTable,
    comp: str,
    patient: Doc | None,
    rps: list[Doc],
    consents: list[Doc],
    managed: bool,
    today: date,
) -> tuple[str, Grant | None] | None:
    """The band a proxy gets on `comp`, and the Consent grant it rests on (None for a
    guardian of a minor, whose access needs no Consent)."""
    if patient is None or not rps:
        return None
    actors = {f"RelatedPerson/{rp['id']}" for rp in rps}
    if managed:
        grant = _grant(consents, comp, actors, today)
        return ("managed", grant) if grant is not None else None
    age = age_on(patient.get("birthDate"), today)
    band = table.band_for_age(age if age is not None else table.adult_from)
    if band == "adult-granted":
        grant = _grant(consents, comp, actors, today)
        return (band, grant) if grant is not None else None
    return (band, None) if any(is_guardian(rp, table) for rp in rps) else None
