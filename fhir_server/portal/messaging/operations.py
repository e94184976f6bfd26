"""The messaging operations' work, framework-free: `Communication/$recipients` and
`Communication/[id]/$mark-read` (the operation registry's modules, fhir_server/operations/
recipients.py and mark_read.py, adapt their parameters to these). See docs/portal.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fhir_server.access.family import reference
from fhir_server.errors import BadRequest, Forbidden, NotFound, PreconditionFailed
from fhir_server.portal.messaging import people, threads
from fhir_server.portal.messaging.table import load_table
from fhir_server.rest import interactions
from fhir_server.rest.messages import FhirRequest, FhirResponse
from fhir_server.search.values import words
from fhir_server.storage.store import instant, now_utc

if TYPE_CHECKING:
    from fhir_server.context import ServerContext

Doc = dict[str, Any]
RT = threads.RT


def patient_reference(value: str | None) -> str:
    """`X` or `Patient/X` as `Patient/X`; 400 naming the parameter otherwise."""
    if not value:
        raise BadRequest(
            "$recipients needs the parameter 'patient' (a Patient id)", code="required"
        )
    rid = value.removeprefix("Patient/")
    interactions.check_id(rid)
    return f"Patient/{rid}"


def name_matches(query: str, names: list[str]) -> bool:
    """Every word of `query` is the start of a word of one of `names`, case and accents
    ignored ("fort belvoir family medicine", "famil médecine")."""
    wanted = words(query)
    have = [w for n in names for w in words(n)]
    return all(any(h.startswith(w) for h in have) for w in wanted)


async def _names(ctx: ServerContext, recipients: list[Doc]) -> dict[str, list[str]]:
    """Each recipient's names: its own (`name`, `alias`) and its managing organisations'."""
    orgs = sorted(
        {
            ref
            for r in recipients
            for node in _as_list(r.get("managingOrganization"))
            if (ref := reference(node)) and ref.startswith("Organization/")
        }
    )
    org_names: dict[str, list[str]] = {}
    if orgs:
        for d in await ctx.store.find(
            {"_id": {"$in": orgs}}, {"_id": 1, "res": 1}, what="The recipients"
        ):
            res = d.get("res") or {}
            org_names[str(d["_id"])] = _own_names(res)
    out: dict[str, list[str]] = {}
    for r in recipients:
        names = _own_names(r)
        for node in _as_list(r.get("managingOrganization")):
            ref = reference(node)
            if isinstance(node, dict) and isinstance(node.get("display"), str):
                names.append(node["display"])
            names += org_names.get(ref or "", [])
        out[people.ref_of(r)] = names
    return out


def _own_names(res: Doc) -> list[str]:
    names = [res["name"]] if isinstance(res.get("name"), str) else []
    return names + [a for a in _as_list(res.get("alias")) if isinstance(a, str)]


def _as_list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else [] if v is None else [v]


async def recipients(
    ctx: ServerContext, req: FhirRequest, patient: str | None, name: str | None
) -> FhirResponse:
    """The recipients the caller may write to about `patient`, as a searchset Bundle.

    A patient the caller cannot see answers as a missing one (404); one it sees but may not
    write messages for (a parent of an adolescent) has no recipients."""
    subject = patient_reference(patient)
    rid = subject.split("/", 1)[1]
    if (
        await ctx.store.find_visible(
            "Patient", rid, req.policy.read_filter("Patient"), session=req.session
        )
        is None
    ):
        raise NotFound(f"{subject} is not known")
    found: list[Doc] = []
    if not req.policy.restricted or people.may_write_messages_for(req, ctx, subject):
        found = await people.patient_recipients(ctx, req, subject)
    if name:
        names = await _names(ctx, found)
        found = [r for r in found if name_matches(name, names[people.ref_of(r)])]
    # Shown only as the caller may read them (defence in depth: pools are directory data,
    # a patient's own care team is in the patient's compartment).
    shown = []
    for r in found:
        rt, rid_ = str(r.get("resourceType")), str(r.get("id"))
        visible = await ctx.store.find_visible(
            rt, rid_, req.policy.read_filter(rt), session=req.session
        )
        if visible is not None:
            shown.append(visible["res"])
    base = ctx.base_url
    query = "&".join(f"{k}={v}" for k, v in (("patient", rid), ("name", name)) if v)
    return FhirResponse(
        status=200,
        body={
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(shown),
            "link": [{"relation": "self", "url": f"{base}/{RT}/$recipients?{query}"}],
            "entry": [
                {
                    "fullUrl": f"{base}/{r['resourceType']}/{r['id']}",
                    "resource": r,
                    "search": {"mode": "match"},
                }
                for r in shown
            ],
        },
    )


async def mark_read(ctx: ServerContext, req: FhirRequest, rid: str) -> FhirResponse:
    """Set the message's read element (`received`) once, as one of its recipients; a second
    call answers 200 with the message unchanged. A message the caller cannot see answers
    404, one it sees but did not receive 403."""
    table = load_table()
    element = table.read_element
    for _ in range(3):
        current = await interactions.read_visible(ctx, req, RT, rid)
        res = current.resource
        assert res is not None
        if req.policy.restricted:
            if not threads.governed(req):
                raise Forbidden("only a recipient of the message marks it read")
            who = await people.caller(ctx, req)
            if not await threads.is_recipient(ctx, req, who, res):
                raise Forbidden(f"only a recipient of {RT}/{rid} marks it read")
        if res.get(element) is not None:
            return interactions.resource_response(ctx, current)
        put = FhirRequest(
            method="PUT",
            path=[RT, rid],
            headers={"if-match": current.etag},
            body={**res, element: instant(now_utc())},
            session=req.session,
            in_bundle=req.in_bundle,
            policy=req.policy,
        )
        try:
            return await interactions.update(ctx, put, RT, rid)
        except PreconditionFailed:
            continue  # marked read (or changed) meanwhile: look again
    raise PreconditionFailed(f"{RT}/{rid} kept changing; retry $mark-read")
