"""Who a notification is for, read from FHIR data (docs/portal.md, "Notifications").

- A clinician's pools: the active CareTeams with no Patient subject that list the
  practitioner (or one of its active PractitionerRoles) as a participant today.
- A message's recipients, as the subscription keys they wake: `Patient/X` itself; a
  RelatedPerson counts for the Patient whose `link` names it only while the person it
  stands for (`RelatedPerson.patient`) is a child under the family table's restricted age
  (profiles/access/family.json): a parent hears of a child's messages, never of a teen's.
- The email address: the recipient's own `telecom` email (never `Patient.contact`, which
  for a minor holds the parents' addresses); for a teen, an address that is also one of
  the teen's RelatedPersons' (a parent's) is refused, so no email about a teen's message
  reaches a parent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession

from fhir_server.access.care_team import load_table as clinician_table
from fhir_server.access.consent import period_covers
from fhir_server.access.family import FamilyTable, age_on, reference
from fhir_server.access.family import load_table as family_table

Doc = dict[str, Any]


def today() -> date:
    return datetime.now(UTC).date()


async def _find(ctx: Any, filt: Doc, session: AsyncClientSession | None) -> list[Doc]:
    # Server-side lookups, not the caller's: no policy applies (the caller is not shown them).
    docs = await ctx.store.find(filt, {"res": 1}, session=session, what="Finding whom to notify")
    return [d["res"] for d in docs if d.get("res")]


async def _one(ctx: Any, ref: str, session: AsyncClientSession | None) -> Doc | None:
    rt, _, rid = ref.partition("/")
    doc = await ctx.store.current(rt, rid, session=session)
    return doc.get("res") if doc is not None else None


async def pools_of(
    ctx: Any, practitioner: str, session: AsyncClientSession | None = None
) -> list[str]:
    """`CareTeam/<id>` of the pools `practitioner` belongs to today, sorted."""
    table = clinician_table()
    on = today()
    roles = await _find(
        ctx, {"rt": "PractitionerRole", "ix.k": f"practitioner={practitioner}"}, session
    )
    members = {practitioner} | {
        f"PractitionerRole/{r.get('id')}"
        for r in roles
        if r.get("active") is not False and period_covers(r.get("period"), on)
    }
    keys = sorted(f"participant={m}" for m in members)
    teams = await _find(ctx, {"rt": "CareTeam", "ix.k": {"$in": keys}}, session)
    out = set()
    for team in teams:
        subject = reference(team.get("subject")) or ""
        if subject.startswith("Patient/"):
            continue  # a patient's own care team, not a pool
        if team.get("status") not in table.care_team_statuses or not period_covers(
            team.get("period"), on
        ):
            continue
        for p in team.get("participant") or []:
            if (
                isinstance(p, dict)
                and reference(p.get("member")) in members
                and period_covers(p.get("period"), on)
            ):
                out.add(f"CareTeam/{team.get('id')}")
    return sorted(out)


@dataclass(frozen=True)
class Recipient:
    """One recipient of a message: the subscription keys it wakes and the email address to
    tell (None: no email, e.g. a pool, or no address of the recipient's own)."""

    keys: tuple[str, ...]
    email: str | None


def _email(resource: Doc | None) -> str | None:
    for t in (resource or {}).get("telecom") or []:
        if (
            isinstance(t, dict)
            and t.get("system") == "email"
            and isinstance(t.get("value"), str)
            and period_covers(t.get("period"), today())
        ):
            return str(t["value"]).strip() or None
    return None


def _band(table: FamilyTable, patient: Doc | None) -> str | None:
    age = age_on((patient or {}).get("birthDate"), today())
    return None if age is None else table.band_for_age(age)


async def _teen_address_is_a_parents(
    ctx: Any, teen: str, address: str, session: AsyncClientSession | None
) -> bool:
    people = await _find(ctx, {"rt": "RelatedPerson", "ix.k": f"patient={teen}"}, session)
    parents = [_email(p) for p in people]
    linked = await _find(
        ctx,
        {"rt": "Patient", "ix.k": {"$in": [f"link=RelatedPerson/{p.get('id')}" for p in people]}},
        session,
    )
    parents += [_email(p) for p in linked]
    return address.lower() in {a.lower() for a in parents if a}


async def adolescent_subject(
    ctx: Any, subject: str | None, session: AsyncClientSession | None
) -> str | None:
    """`subject` when it is a Patient in the adolescent band: a message about a teen may be
    told to the teen and to care teams only (the adolescent promise)."""
    if subject is None or not subject.startswith("Patient/"):
        return None
    return (
        subject
        if _band(family_table(), await _one(ctx, subject, session)) == "adolescent"
        else None
    )


async def proxies_of(ctx: Any, patient: str, session: AsyncClientSession | None) -> list[str]:
    """`RelatedPerson/<id>` of everyone who stands for `patient`; `recipient` then admits
    only those for a child under the restricted age (callers skip this for a teen)."""
    if not patient.startswith("Patient/"):
        return []
    people = await _find(ctx, {"rt": "RelatedPerson", "ix.k": f"patient={patient}"}, session)
    return [f"RelatedPerson/{p.get('id')}" for p in people]


async def recipient(ctx: Any, ref: str, session: AsyncClientSession | None) -> Recipient:
    rt = ref.split("/", 1)[0]
    family = family_table()
    if rt == "Patient":
        patient = await _one(ctx, ref, session)
        address = _email(patient)
        if (
            address is not None
            and _band(family, patient) == "adolescent"
            and await _teen_address_is_a_parents(ctx, ref, address, session)
        ):
            address = None  # the adolescent promise: never a parent's inbox
        return Recipient((ref,), address)
    if rt == "RelatedPerson":
        rp = await _one(ctx, ref, session)
        child = reference((rp or {}).get("patient"))
        if rp is None or child is None or rp.get("active") is False:
            return Recipient((), None)
        if _band(family, await _one(ctx, child, session)) != "child":
            return Recipient((), None)  # only for a child under the restricted age
        parents = await _find(ctx, {"rt": "Patient", "ix.k": f"link={ref}"}, session)
        keys = tuple(f"Patient/{p.get('id')}" for p in parents)
        return Recipient(keys, _email(rp))
    return Recipient((ref,), None)
