"""The instance- and type-level interactions: read, vread, create, update, patch, delete.

Each takes a `FhirRequest` and returns a `FhirResponse`; nothing here knows about HTTP
frameworks. See https://hl7.org/fhir/R4/http.html.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Awaitable, Callable
from typing import Any

import jsonpatch

from fhir_server.access import views
from fhir_server.access.masking import unmask_write
from fhir_server.access.policy import AccessPolicy
from fhir_server.access.screen import admitted, screen, security_labels
from fhir_server.context import ServerContext
from fhir_server.db.retry import ATTEMPTS, dropped_before_commit, note_retry
from fhir_server.errors import (
    BadRequest,
    Forbidden,
    Gone,
    NotFound,
    PreconditionFailed,
    ServiceUnavailable,
    Unprocessable,
)
from fhir_server.portal.hooks import WriteEvent, write_session
from fhir_server.rest import binary_content, idempotency, searching, write_guard
from fhir_server.rest.headers import parse_if_match, version_headers
from fhir_server.rest.messages import FhirRequest, FhirResponse
from fhir_server.search.query import NOTHING
from fhir_server.storage.store import Tombstone, Version, WriteResult, new_id

Doc = dict[str, Any]

# https://hl7.org/fhir/R4/datatypes.html#id
ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


def check_id(rid: str) -> None:
    if not ID_PATTERN.match(rid):
        raise BadRequest(f"{rid!r} is not a valid resource id ([A-Za-z0-9-.]{{1,64}})")


def resource_response(
    ctx: ServerContext,
    v: Version,
    status: int = 200,
    *,
    location: bool = False,
    previous: Version | None = None,
) -> FhirResponse:
    return FhirResponse(
        status=status,
        body=v.resource,
        headers=version_headers(v, ctx.base_url, location=location),
        location=f"{v.rt}/{v.id}/_history/{v.vid}",
        versions=(v,) if previous is None else (v, previous),
    )


def body_resource(req: FhirRequest, rt: str) -> Doc:
    """The request body as a resource of type `rt`, or a 400 that says what is wrong."""
    body = req.body
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object holding a FHIR resource", code="structure")
    actual = body.get("resourceType")
    if actual is None:
        raise BadRequest("the body has no resourceType", code="structure")
    if actual != rt:
        raise BadRequest(f"the body holds a {actual!r} but the URL names {rt!r}")
    return body


def visible(req: FhirRequest, rt: str) -> Doc | None:
    """The policy's filter for reads of `rt`, or None when nothing is hidden."""
    return req.policy.read_filter(rt)


async def visible_version(ctx: ServerContext, req: FhirRequest, rt: str, rid: str) -> Version:
    """The current version under the policy, or the tombstone of a resource the caller
    could see when it was deleted; otherwise 404, the answer for a missing id.

    A read is a search on `_id` under the policy (the filter ANDed in, never merged), then
    the in-memory post-check, so hidden and missing answer alike. A tombstone is tested on
    the compartments and search keys the resource had when it was deleted (docs/access.md,
    "Deleted resources: 410 or 404")."""
    store = ctx.store.for_type(rt)
    doc = await store.find_visible(rt, rid, visible(req, rt), session=req.session)
    if doc is not None:
        v = Version.from_doc(doc)
        if not screen(req.policy, ctx.store.indexer, v.resource, where="read", stored=doc):
            raise NotFound(f"{rt}/{rid} is not known")
        return v
    tomb = await store.tombstone(rt, rid, session=req.session)
    if tomb is not None and could_see(req.policy, rt, tomb):
        return tomb.version
    raise NotFound(f"{rt}/{rid} is not known")


def could_see(policy: AccessPolicy, rt: str, tomb: Tombstone) -> bool:
    """Whether the policy would have shown the deleted resource. A query-qualified scope on
    the type is a search the tombstone cannot answer (it keeps no resource), so under one
    a deleted resource answers as a missing one."""
    if not policy.restricted:
        return True
    if rt in policy.scope_filters or policy.type_filter(rt) == NOTHING:
        return False
    return policy.admits(rt, tomb.compartments, tomb.keys)


async def read_visible(ctx: ServerContext, req: FhirRequest, rt: str, rid: str) -> Version:
    """The current version the caller may see; 410 for a deleted one it could see
    (https://hl7.org/fhir/R4/http.html#read), 404 for a hidden or missing one."""
    v = await visible_version(ctx, req, rt, rid)
    if v.deleted:
        raise Gone(f"{rt}/{rid} was deleted", headers={"ETag": v.etag})
    return v


async def read(ctx: ServerContext, req: FhirRequest, rt: str, rid: str) -> FhirResponse:
    v = await read_visible(ctx, req, rt, rid)
    if binary_content.wants_raw(req):
        return binary_content.raw_response(ctx.base_url, req, v)
    return resource_response(ctx, v)


async def vread(ctx: ServerContext, req: FhirRequest, rt: str, rid: str, vid: str) -> FhirResponse:
    """https://hl7.org/fhir/R4/http.html#vread: earlier versions of a deleted resource stay
    readable to whoever could see it."""
    if req.policy.restricted:
        # Earlier versions are shown only while the resource (or its tombstone) is visible.
        await visible_version(ctx, req, rt, rid)
    v = await ctx.store.for_type(rt).vread(rt, rid, vid, session=req.session)
    # An old version is itself checked: one labelled then (and relabelled since) stays
    # hidden, answering as a version that does not exist.
    if (
        req.policy.restricted
        and v.resource is not None
        and not admitted(req.policy, ctx.store.indexer, v.resource, v.stored)
    ):
        raise NotFound(f"{rt}/{rid} has no version {vid}")
    if req.policy.restricted and v.resource is not None:
        views.apply(req.policy, v.resource, v.stored)
    return resource_response(ctx, v)


async def _admit(
    ctx: ServerContext,
    req: FhirRequest,
    rt: str,
    rid: str | None,
    resource: Doc,
    interaction: str,
) -> Doc:
    """Validate a resource about to be written and check the policy and the write rules
    allow writing it: a confined token writes only into its patients' compartments, only
    what it could read back, never over a resource it cannot see, and a proxy never touches
    security labels; the write-rule table (access/writes.py) decides the rest. Returns the
    resource to store (actor-bound elements filled in)."""
    policy = req.policy
    # Before validation: whether the token may write the type at all says nothing of data.
    write_guard.precheck(ctx, policy, rt, interaction)
    if not req.validated:
        ctx.validator.validate(resource)
    if not policy.restricted:
        return await _workflows_before(ctx, req, rt, rid, resource, interaction, None)
    filt = visible(req, rt)
    old: Doc | None = None
    if rid is not None:
        current = await ctx.store.find_visible(rt, rid, filt, session=req.session)
        if current is None and policy.compartments is not None:
            # A patient token updates only what it can see and creates with POST: so a
            # hidden id answers exactly as a missing one (docs/access.md, "Writes").
            raise NotFound(f"{rt}/{rid} is not known")
        if current is None and filt and await ctx.store.current(rt, rid, session=req.session):
            raise Forbidden(f"the access token may not write {rt}/{rid}")
        old = current.get("res") if current is not None else None
    # What the read-time views masked comes back as it was shown: keep the stored values
    # (before the write rules compare the versions: access/masking.py).
    resource = unmask_write(policy, old, resource)
    resource = write_guard.fill(ctx, policy, rt, resource)
    # Inherited compartments included (a Binary is in its securityContext's): a patient
    # writes an attachment of their own message, never of a message they cannot see.
    ix, comps = await ctx.store.compartments_of(
        rt, {**resource, "resourceType": rt, "id": rid or "new"}, session=req.session
    )
    policy.check_write(
        comps,
        resource_type=rt,
        keys=ix.get("k", ()),
        labels_before=security_labels(old),
        labels_after=security_labels(resource),
    )
    guarded = await write_guard.guard(ctx, req, rt, interaction, old, resource)
    assert guarded is not None
    return await _workflows_before(ctx, req, rt, rid, guarded, interaction, old, read=True)


async def _workflows_before(
    ctx: ServerContext,
    req: FhirRequest,
    rt: str,
    rid: str | None,
    resource: Doc,
    interaction: str,
    old: Doc | None,
    *,
    read: bool = False,
) -> Doc:
    """The portal workflows' checks (portal/hooks.py), last, on what the write path would
    store; they see the current version (`old`) whatever the token."""
    if not ctx.workflows.watches(rt):
        return resource
    if rid is not None and not read:
        current = await ctx.store.current(rt, rid, session=req.session)
        old = current.get("res") if current is not None else None
    event = WriteEvent(rt, rid, interaction, old, resource)
    new = await ctx.workflows.before(ctx, req, event)
    assert new is not None
    return new


async def _workflows_after(
    ctx: ServerContext,
    req: FhirRequest,
    rt: str,
    interaction: str,
    result: WriteResult,
) -> None:
    """The workflows' side effects, in the write's transaction (portal/hooks.py)."""
    if not ctx.workflows.has_after(rt) or not result.changed:
        return
    previous = result.previous.resource if result.previous is not None else None
    version = result.version
    event = WriteEvent(rt, version.id, interaction, previous, version.resource)
    await ctx.workflows.after(ctx, req, event, version, req.session)


async def _in_write_session(
    ctx: ServerContext, req: FhirRequest, rt: str, op: Callable[[], Awaitable[WriteResult]]
) -> WriteResult:
    """`op` (admit, store, workflows' side effects) in the request's write session. When
    that session is a transaction of its own (the type has an `after` step), nothing was
    written when it fails before committing, so it runs again: once when it lost its pooled
    connection (db/retry.py), and, for a write without `If-Match`, after each lost race with
    a concurrent writer (jittered backoff, as the store retries its own transactions:
    docs/storage.md), so parallel updates all land as distinct versions instead of 412.
    With `If-Match` a lost race is the client's 412."""
    own = req.session is None and ctx.workflows.has_after(rt)
    dropped = 0
    racing = own and req.header("if-match") is None
    for attempt in range(idempotency.MAX_ATTEMPTS):
        try:
            async with write_session(ctx, req, rt):
                return await op()
        except PreconditionFailed:
            if not racing:
                raise
            await idempotency.backoff(attempt)
        except Exception as exc:
            dropped += 1
            if not own or dropped == ATTEMPTS or not dropped_before_commit(exc):
                raise
            note_retry(f"a {rt} write", exc)
    raise ServiceUnavailable(f"this {rt} is under heavy concurrent change; retry")


async def create(
    ctx: ServerContext, req: FhirRequest, rt: str, *, assigned_id: str | None = None
) -> FhirResponse:
    """Create; honours If-None-Exist (conditional create) and Idempotency-Key.

    The server assigns the id and ignores one in the body, as
    https://hl7.org/fhir/R4/http.html#create requires. A guarded create (either header)
    claims its condition or key in the transaction that writes, so parallel copies create
    one resource (rest/idempotency.py); a copy that lost the race starts again and answers
    the winner's resource.
    """
    resource = body_resource(req, rt)
    write_guard.precheck(ctx, req.policy, rt, "create")
    resource = dict(resource)
    resource.pop("id", None)
    guards = idempotency.Guards.of(req, rt, resource)
    if guards is None:
        rid = assigned_id or req.assigned_id
        result = await _in_write_session(
            ctx, req, rt, lambda: _store_new(ctx, req, rt, resource, rid)
        )
        return _viewed(req, resource_response(ctx, result.version, 201, location=True))
    if req.session is not None:
        # In a transaction bundle: a lost race fails the bundle (412, retry it).
        try:
            return await _guarded_create(ctx, req, rt, resource, guards, assigned_id)
        except idempotency.LostRace:
            raise PreconditionFailed(
                f"another request created a {rt} by the same condition meanwhile; "
                "nothing was changed, retry the transaction"
            ) from None
    for attempt in range(idempotency.MAX_ATTEMPTS):
        try:
            return await _guarded_create(ctx, req, rt, resource, guards, assigned_id)
        except idempotency.LostRace:
            await idempotency.backoff(attempt)
    raise ServiceUnavailable(f"too many concurrent copies of this {rt} create; retry")


async def _store_new(
    ctx: ServerContext, req: FhirRequest, rt: str, resource: Doc, rid: str | None
) -> WriteResult:
    """Admit and write a new resource and run the workflows' side effects, in the
    request's session."""
    resource = await _admit(ctx, req, rt, None, resource, "create")
    result = await ctx.store.create(rt, resource, rid=rid, session=req.session)
    await _workflows_after(ctx, req, rt, "create", result)
    return result


async def _guarded_create(
    ctx: ServerContext,
    req: FhirRequest,
    rt: str,
    resource: Doc,
    guards: idempotency.Guards,
    assigned_id: str | None,
) -> FhirResponse:
    """One attempt: claims read, then the replay or the search, then the claims moved on
    with the write (LostRace when another copy moved one first)."""
    claims = req.claims if req.claims is not None else await guards.read(ctx)
    replay = guards.replay(claims)
    if replay is not None:
        rid, status = replay
        v = await read_visible(ctx, req, rt, rid)
        return resource_response(ctx, v, status, location=status == 201)
    matched: str | None = None
    if guards.condition is not None and req.claims is None:
        # (A bundle searched its ifNoneExist already, after reading the claims.)
        matches = await searching.conditional_matches(ctx, rt, guards.condition, req)
        if len(matches) > 1:
            raise PreconditionFailed(
                f"If-None-Exist {guards.condition!r} matches {len(matches)} resources"
            )
        matched = matches[0] if matches else None
    if matched is not None:
        v = await read_visible(ctx, req, rt, matched)
        if guards.request_key is not None:
            async with idempotency.transaction(ctx, req):
                await guards.take(ctx, claims, req, matched, 200, key_only=True)
        return resource_response(ctx, v, 200)
    rid = assigned_id or req.assigned_id or new_id()
    async with idempotency.transaction(ctx, req):
        await guards.take(ctx, claims, req, rid, 201)
        result = await _store_new(ctx, req, rt, resource, rid)
    return _viewed(req, resource_response(ctx, result.version, 201, location=True))


async def update(ctx: ServerContext, req: FhirRequest, rt: str, rid: str) -> FhirResponse:
    """Update, or update-as-create with the client's id. https://hl7.org/fhir/R4/http.html#update"""
    check_id(rid)
    resource = body_resource(req, rt)
    body_id = resource.get("id")
    if body_id is None:
        raise BadRequest("an update body must carry the resource id", code="required", issues=[])
    if body_id != rid:
        raise BadRequest(f"the body id {body_id!r} differs from the URL id {rid!r}")
    if_match = parse_if_match(req.header("if-match"))

    async def op() -> WriteResult:
        admitted = await _admit(ctx, req, rt, rid, resource, "update")
        result = await ctx.store.update(rt, rid, admitted, if_match=if_match, session=req.session)
        await _workflows_after(ctx, req, rt, "update", result)
        return result

    return _write_response(ctx, req, await _in_write_session(ctx, req, rt, op))


def _write_response(ctx: ServerContext, req: FhirRequest, result: WriteResult) -> FhirResponse:
    status = 201 if result.created else 200
    resp = resource_response(ctx, result.version, status, location=True, previous=result.previous)
    return _viewed(req, resp)


def _viewed(req: FhirRequest, resp: FhirResponse) -> FhirResponse:
    """A write's answer as a read would show it: the request's read-time views (an SSN
    masked, access/views.py) on a copy, so the stored version and the audit keep it whole."""
    if not req.policy.restricted or not isinstance(resp.body, dict):
        return resp
    if not req.policy.views.get(str(resp.body.get("resourceType"))):
        return resp
    body = copy.deepcopy(resp.body)
    views.apply(req.policy, body, None)
    resp.body = body
    return resp


async def conditional_update(ctx: ServerContext, req: FhirRequest, rt: str) -> FhirResponse:
    """PUT [type]?[search]: https://hl7.org/fhir/R4/http.html#cond-update"""
    if not req.params:
        raise BadRequest("a conditional update needs search parameters in the URL")
    resource = body_resource(req, rt)
    write_guard.precheck(ctx, req.policy, rt, "update")
    matches = await searching.conditional_matches(ctx, rt, req.params, req)
    if len(matches) > 1:
        raise PreconditionFailed(f"the condition matches {len(matches)} resources")
    body_id = resource.get("id")
    if matches:
        rid = matches[0]
        if body_id is not None and body_id != rid:
            raise BadRequest(f"the body id {body_id!r} differs from the matched id {rid!r}")
        if_match = parse_if_match(req.header("if-match"))
        async with write_session(ctx, req, rt):
            resource = await _admit(ctx, req, rt, rid, {**resource, "id": rid}, "update")
            result = await ctx.store.update(
                rt, rid, resource, if_match=if_match, session=req.session
            )
            await _workflows_after(ctx, req, rt, "update", result)
        return _write_response(ctx, req, result)
    async with write_session(ctx, req, rt):
        if body_id is not None:
            check_id(body_id)
            resource = await _admit(ctx, req, rt, body_id, resource, "update")
            result = await ctx.store.update(rt, body_id, resource, session=req.session)
            await _workflows_after(ctx, req, rt, "update", result)
        else:
            resource = await _admit(ctx, req, rt, None, dict(resource), "create")
            result = await ctx.store.create(rt, resource, session=req.session)
            await _workflows_after(ctx, req, rt, "create", result)
    return _write_response(ctx, req, result)


async def patch(ctx: ServerContext, req: FhirRequest, rt: str, rid: str) -> FhirResponse:
    """JSON Patch (RFC 6902): https://hl7.org/fhir/R4/http.html#patch"""
    idempotency.refuse_key(req, "PATCH")
    ops = req.body
    if not isinstance(ops, list):
        raise BadRequest("a JSON Patch body is an array of operations", code="structure")
    write_guard.precheck(ctx, req.policy, rt, "patch")
    current = await ctx.store.read(rt, rid, session=req.session, visible=visible(req, rt))
    if_match = parse_if_match(req.header("if-match"))
    if if_match is not None and if_match != current.vid:
        raise PreconditionFailed(f"{rt}/{rid} is at version {current.vid}, not {if_match}")
    assert current.resource is not None
    try:
        patched = jsonpatch.apply_patch(copy.deepcopy(current.resource), ops)
    except jsonpatch.JsonPatchTestFailed as exc:
        raise Unprocessable(f"a JSON Patch test operation failed: {exc}") from None
    except (
        jsonpatch.JsonPatchException,
        jsonpatch.JsonPointerException,
        TypeError,
        KeyError,
        IndexError,
        ValueError,
    ) as exc:
        raise BadRequest(f"the JSON Patch cannot be applied: {exc}") from None
    if (
        not isinstance(patched, dict)
        or patched.get("resourceType") != rt
        or patched.get("id") != rid
    ):
        raise Unprocessable("a patch may not change resourceType or id")
    from fhir_server.rest.body import check_tree

    check_tree(patched, max_depth=ctx.settings.max_json_depth)

    async def op() -> WriteResult:
        admitted = await _admit(ctx, req, rt, rid, patched, "patch")
        result = await ctx.store.update(
            rt, rid, admitted, if_match=current.vid, method="PATCH", session=req.session
        )
        await _workflows_after(ctx, req, rt, "patch", result)
        return result

    return _write_response(ctx, req, await _in_write_session(ctx, req, rt, op))


async def delete(ctx: ServerContext, req: FhirRequest, rt: str, rid: str) -> FhirResponse:
    """Delete; deleting what is absent or already deleted also answers 204 (idempotent)."""
    if_match = parse_if_match(req.header("if-match"))
    write_guard.precheck(ctx, req.policy, rt, "delete")
    filt = visible(req, rt)
    current: Doc | None = None
    if req.policy.restricted:
        current = await ctx.store.find_visible(rt, rid, filt, session=req.session)
        if current is None and filt:
            # Hidden answers as missing: deleting what is not there is a 204 no-op.
            return FhirResponse(status=204)
        if current is not None:
            # The write rules judge the version being deleted (its compartments' bands).
            await write_guard.guard(ctx, req, rt, "delete", current.get("res"), None)
    tomb = await ctx.store.delete(rt, rid, if_match=if_match, session=req.session)
    headers = {"ETag": tomb.etag} if tomb else {}
    # The version deleted, when the policy check read it: the audit names its patients.
    gone = (tomb, Version.from_doc(current)) if tomb and current is not None else ()
    return FhirResponse(status=204, headers=headers, versions=gone)


async def conditional_delete(ctx: ServerContext, req: FhirRequest, rt: str) -> FhirResponse:
    """DELETE [type]?[search], single-match flavour: https://hl7.org/fhir/R4/http.html#3.1.0.7.1"""
    if not req.params:
        raise BadRequest("a conditional delete needs search parameters in the URL")
    write_guard.precheck(ctx, req.policy, rt, "delete")
    matches = await searching.conditional_matches(ctx, rt, req.params, req)
    if len(matches) > 1:
        raise PreconditionFailed(
            f"the condition matches {len(matches)} resources; this server deletes one at a time"
        )
    if not matches:
        return FhirResponse(status=204)
    return await delete(ctx, req, rt, matches[0])


def unknown_type(rt: str) -> NotFound:
    return NotFound(f"{rt!r} is not a resource type this server knows", code="not-supported")
