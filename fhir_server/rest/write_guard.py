"""The write rules applied to one write: the old and the new version, both checked.

The decisions are the table's (fhir_server/access/writes.py); this module makes the lookups
they need: who the token's user is (its RelatedPersons or PractitionerRoles), whether each
reference a user token writes resolves to something it may read. (The Questionnaire a
QuestionnaireResponse answers is the clipboard workflow's: portal/clipboards.py.) An update can neither take a resource out of the caller's
reach nor bring one in: the old version must be writable by the caller as much as the new.
See docs/access.md, "Writes".
"""

from __future__ import annotations

import re
from typing import Any

from fhir_server.access import writes
from fhir_server.access.policy import AccessPolicy
from fhir_server.context import ServerContext
from fhir_server.errors import Forbidden, Issue, Unprocessable
from fhir_server.rest.messages import FhirRequest

Doc = dict[str, Any]
_LITERAL = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]+)?$")


def table(ctx: ServerContext) -> writes.WriteTable:
    return writes.load_table(known_types=ctx.known_types)


def precheck(ctx: ServerContext, policy: AccessPolicy, rt: str, interaction: str) -> None:
    """403 when no kind of actor this token can be may use `interaction` on `rt`: decided
    from the token and the type alone, before any lookup, so hidden and missing agree."""
    if not policy.restricted:
        return
    if not writes.may_ever(table(ctx), policy.possible_writer_kinds(), rt, interaction):
        raise Forbidden(f"this access token may not {interaction} {rt} resources")


def _refuse(refusal: writes.Refusal) -> Exception:
    if refusal.code == "forbidden":
        return Forbidden(refusal.reason)
    return _unprocessable(refusal.reason, refusal.expression)


def _unprocessable(reason: str, expression: tuple[str, ...]) -> Unprocessable:
    return Unprocessable(
        reason,
        code="business-rule",
        issues=[Issue("business-rule", reason, expression=expression)],
    )


async def guard(
    ctx: ServerContext,
    req: FhirRequest,
    rt: str,
    interaction: str,
    old: Doc | None,
    new: Doc | None,
) -> Doc | None:
    """Check a write against the table; return the new version with the actor-bound
    elements it left out filled in with the token's user."""
    policy = req.policy
    if not policy.restricted or policy.auth is None:
        return new
    t = table(ctx)
    kinds_new = await _kinds(ctx, req, rt, new)
    kinds_old = await _kinds(ctx, req, rt, old)
    for kinds, version in ((kinds_old, old), (kinds_new, new)):
        for kind in kinds:
            refusal = writes.decide(t, kind, rt, interaction, version)
            if refusal is not None:
                raise _refuse(refusal)
    rules = [t.actors[k] for k in (*kinds_old, *kinds_new)]
    if any(r.protected for r in rules):
        changed = writes.protected_changes(t, rt, old, new)
        if changed:
            raise _unprocessable(
                f"this access token may not change {', '.join(changed)}", tuple(changed)
            )
    # A recipient marking a message read changes what someone else wrote: the table lets
    # that one change through unbound, and the workflow decides who is a recipient.
    if any(r.bound for r in rules) and not t.recipient_change(rt, old, new):
        user = policy.auth.fhir_user or ""
        if new is not None:
            new = writes.fill_bound(t, rt, new, user)
        identities = await caller_identities(ctx, req, user)
        for version, when in ((old, "the current version"), (new, "the resource")):
            bad = writes.bound_violations(t, rt, version, identities)
            if bad:
                raise _unprocessable(
                    f"{', '.join(bad)} of {when} must name the user of this access token",
                    tuple(bad),
                )
    if new is not None and any(r.references_visible for r in rules):
        await _check_references(ctx, req, rt, old, new)
    return new


def fill(ctx: ServerContext, policy: AccessPolicy, rt: str, resource: Doc) -> Doc:
    """The resource with the actor-bound elements it leaves out set to the token's user
    (for a token whose writes are bound), before its compartments are judged."""
    if policy.auth is None or not policy.restricted:
        return resource
    t = table(ctx)
    if not any(t.actors[k].bound for k in policy.possible_writer_kinds()):
        return resource
    return writes.fill_bound(t, rt, resource, policy.auth.fhir_user or "")


async def _kinds(
    ctx: ServerContext, req: FhirRequest, rt: str, version: Doc | None
) -> tuple[str, ...]:
    if version is None:
        return ()
    _, comps = await ctx.store.compartments_of(
        rt, {**version, "resourceType": rt, "id": version.get("id", "new")}, session=req.session
    )
    return req.policy.writer_kinds(comps)


async def caller_identities(ctx: ServerContext, req: FhirRequest, user: str) -> frozenset[str]:
    """The references that stand for the token's user: itself, the RelatedPersons its
    Patient.link points at (a proxy writes as the dependent's RelatedPerson), or its
    PractitionerRoles."""
    store = ctx.store
    out = {user}
    if user.startswith("Patient/"):
        found = await store.find({"_id": user}, {"res.link": 1}, limit=1, session=req.session)
        me = found[0] if found else None
        for link in ((me or {}).get("res") or {}).get("link") or []:
            ref = (link.get("other") or {}).get("reference") if isinstance(link, dict) else None
            if isinstance(ref, str) and ref.startswith("RelatedPerson/"):
                out.add(ref)
        if req.policy.auth is not None and req.policy.auth.acr == "managed":
            # The appointee of a Managed account is a RelatedPerson of the beneficiary.
            for d in await store.find(
                {"rt": "RelatedPerson", "ix.k": f"patient={user}"}, {"_id": 1}, session=req.session
            ):
                out.add(str(d["_id"]))
    elif user.startswith("Practitioner/"):
        for d in await store.find(
            {"rt": "PractitionerRole", "ix.k": f"practitioner={user}"},
            {"_id": 1},
            session=req.session,
        ):
            out.add(str(d["_id"]))
    return frozenset(out)


async def _check_references(
    ctx: ServerContext, req: FhirRequest, rt: str, old: Doc | None, new: Doc
) -> None:
    """Every reference the write adds resolves to a resource this token may read (directory
    data included): an unknown or foreign reference is a 422 naming the element."""
    kept = {ref for _, ref in writes.references(old, rt)} if old is not None else set()
    checked: dict[str, bool] = {}
    for path, ref in writes.references(new, rt):
        if ref in kept:
            continue
        if ref not in checked:
            checked[ref] = await _resolves(ctx, req, ref)
        if not checked[ref]:
            raise _unprocessable(
                f"{path} refers to {ref!r}, which is not a resource this access token may refer to",
                (path,),
            )


async def _resolves(ctx: ServerContext, req: FhirRequest, ref: str) -> bool:
    base = ctx.base_url + "/"
    if ref.startswith(base):
        ref = ref[len(base) :]
    m = _LITERAL.match(ref)
    if m is None or m.group(1) not in ctx.known_types:
        return False
    filt = req.policy.read_filter(m.group(1))
    found = await ctx.store.find_visible(
        m.group(1), m.group(2), filt, session=req.session, fields={"_id": 1}
    )
    return found is not None
