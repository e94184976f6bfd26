"""Who the caller is in a conversation: the sender it writes as, the recipients it stands
for, and the recipients a patient may write to. FHIR data read per request (Patient.link,
RelatedPerson, Consent, CareTeam), never code (docs/portal.md, "Secure messaging")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fhir_server.access import care_team, family, writes
from fhir_server.access.policy import today
from fhir_server.rest.write_guard import caller_identities

if TYPE_CHECKING:
    from fhir_server.context import ServerContext
    from fhir_server.rest.messages import FhirRequest

Doc = dict[str, Any]


@dataclass(frozen=True)
class Caller:
    """The token's user as messaging sees it."""

    user: str  # fhirUser: Patient/<id> or Practitioner/<id>
    managed: bool
    # The user itself, the RelatedPersons its Patient.link points at (or, for a Managed
    # account, the beneficiary's), a practitioner's PractitionerRoles.
    identities: frozenset[str]
    # A practitioner's care teams and pools (care_team.memberships); empty for patients.
    teams: frozenset[str]

    @property
    def clinician(self) -> bool:
        return self.user.startswith("Practitioner/")


async def caller(ctx: ServerContext, req: FhirRequest) -> Caller:
    auth = req.policy.auth
    assert auth is not None and auth.fhir_user is not None
    user = auth.fhir_user
    identities = await caller_identities(ctx, req, user)
    teams: tuple[str, ...] = ()
    if user.startswith("Practitioner/"):
        teams, _ = await care_team.memberships(
            ctx.store, ctx.policy_tables.clinicians, user, today()
        )
    return Caller(user, auth.acr == family.MANAGED_LEVEL, identities, frozenset(teams))


async def sender_for(ctx: ServerContext, req: FhirRequest, who: Caller, subject: str) -> str | None:
    """The reference a patient-side caller writes as in `subject`'s threads: itself on its
    own record, else the RelatedPerson that stands for it towards `subject` (a parent for a
    child, a granted proxy, a Managed account's appointee). None when there is none."""
    if subject == who.user and not who.managed:
        return who.user
    rps = [i for i in sorted(who.identities) if i.startswith("RelatedPerson/")]
    if not rps:
        return None
    docs = await ctx.store.find(
        {"_id": {"$in": rps}}, {"_id": 1, "res": 1}, session=req.session, what="The sender"
    )
    now = today()
    mine = [
        d
        for d in docs
        if family.reference((d.get("res") or {}).get("patient")) == subject
        and family.active_relatedperson(d.get("res") or {}, now)
    ]
    if who.managed and len(mine) > 1:
        # The beneficiary's RelatedPersons: the appointee is the one a Consent names.
        consents = await ctx.store.resources_matching(
            {"rt": "Consent", "ix.k": f"patient={subject}"}, what="The sender"
        )
        granted = [
            d
            for d in mine
            if any(family.consent_grants(c, subject, {str(d["_id"])}, now) for c in consents)
        ]
        mine = granted or mine
    return str(mine[0]["_id"]) if mine else None


async def patient_recipients(ctx: ServerContext, req: FhirRequest, subject: str) -> list[Doc]:
    """The recipients a patient (or the patient's proxy) may write to about `subject`: the
    active care teams the organisation maintains whose subject it is, then the members of
    those teams of the table's member types (the clinic's nurse pool); ordered, no repeat."""
    from fhir_server.portal.messaging.table import load_table

    table = ctx.policy_tables.clinicians
    now = today()

    def counts(team: Doc) -> bool:
        return table.maintained(team) and care_team.team_active(team, table, now)

    teams = [
        t
        for t in await ctx.store.resources_matching(
            {"rt": "CareTeam", "ix.k": f"subject={subject}"}, what="The recipients"
        )
        if counts(t)
    ]
    teams.sort(key=lambda t: str(t.get("id")))
    member_types = load_table().member_types
    wanted: list[str] = []
    for team in teams:
        for p in team.get("participant") or []:
            ref = family.reference(p.get("member")) if isinstance(p, dict) else None
            if ref and ref.split("/", 1)[0] in member_types and ref not in wanted:
                wanted.append(ref)
    found = {}
    if wanted:
        for d in await ctx.store.find(
            {"_id": {"$in": wanted}}, {"_id": 1, "res": 1}, what="The recipients"
        ):
            res = d.get("res") or {}
            if res.get("resourceType") != "CareTeam" or counts(res):
                found[str(d["_id"])] = res
    out = [*teams, *(found[r] for r in wanted if r in found)]
    seen: set[str] = set()
    unique = []
    for r in out:
        ref = f"{r.get('resourceType')}/{r.get('id')}"
        if ref not in seen:
            seen.add(ref)
            unique.append(r)
    return unique


def ref_of(resource: Doc) -> str:
    return f"{resource.get('resourceType')}/{resource.get('id')}"


def may_write_messages_for(req: FhirRequest, ctx: ServerContext, patient: str) -> bool:
    """Whether the token writes Communications in `patient`'s compartment (its kind there
    per the write table): a parent of an adolescent does not."""
    t = writes.load_table(known_types=ctx.known_types)
    kinds = req.policy.writer_kinds([patient])
    return bool(req.policy.sees_compartment(patient)) and all(
        writes.decide(t, k, "Communication", "update", None) is None for k in kinds
    )
