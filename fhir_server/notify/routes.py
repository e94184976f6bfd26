"""`Subscription` create, read, search and delete, each the caller's own only.

A Subscription is not in any patient compartment (R4 CompartmentDefinition), so the
compartment policy cannot say whose it is; it is kept in its own collection with its
owner (the token's `fhirUser`), and every read is a lookup on id AND owner, so another
user's subscription answers exactly as a missing one (404). Creating one checks the topic's
filter names the caller (their own Patient, or a pool they belong to): naming anyone else
is 403 and nothing is stored. Update is not offered (delete and create again).

With tokens off (a REST-core test setting, never production) there is no owner: the filter
must name its reference and every caller shares the subscriptions.

http://hl7.org/fhir/uv/subscriptions-backport/ ; https://hl7.org/fhir/R4/subscription.html
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from fhir_server.context import ServerContext
from fhir_server.errors import (
    BadRequest,
    Forbidden,
    Issue,
    MethodNotAllowed,
    NotFound,
    Unprocessable,
)
from fhir_server.notify import backport, endpoints
from fhir_server.notify.queue import NotifyStore, new_id, now_utc
from fhir_server.notify.subscribers import pools_of
from fhir_server.notify.table import NotificationTable, load_table
from fhir_server.rest.messages import FhirRequest, FhirResponse

Doc = dict[str, Any]
RT = "Subscription"
SEARCH_PARAMS = frozenset({"status", "_count"})


def table() -> NotificationTable:
    return load_table()


def owner_of(req: FhirRequest) -> str:
    """The subscriber: the token's own user ("" with tokens off)."""
    auth = req.policy.auth
    if auth is None:
        return ""
    if auth.is_system or not auth.fhir_user:
        raise Forbidden("a Subscription belongs to a user: this access token names none")
    return str(auth.fhir_user)


async def route(ctx: ServerContext, req: FhirRequest) -> FhirResponse:
    path, method = list(req.path), ("GET" if req.method == "HEAD" else req.method)
    store = NotifyStore(ctx.store.db)
    if len(path) == 1:
        if method == "POST":
            req.policy.require(RT, "create")
            return await create(ctx, req, store)
        if method == "GET":
            req.policy.require(RT, "search")
            return await search(ctx, req, store)
        raise MethodNotAllowed(
            f"{method} is not allowed on Subscription", headers={"Allow": "GET, POST"}
        )
    rid = path[1]
    if len(path) == 2 and not rid.startswith(("$", "_")):
        if method == "GET":
            req.policy.require(RT, "read")
            return FhirResponse(status=200, body=render(await owned(ctx, req, store, rid)))
        if method == "DELETE":
            req.policy.require(RT, "delete")
            if not await store.delete_owned(rid, owner_of(req), req.session):
                raise NotFound(f"Subscription/{rid} is not known")
            return FhirResponse(status=204)
        raise MethodNotAllowed(
            f"{method} is not allowed on a Subscription: delete it and create a new one",
            headers={"Allow": "GET, DELETE"},
        )
    raise NotFound(f"/{'/'.join(path)} is not a supported URL", code="not-supported")


async def owned(ctx: ServerContext, req: FhirRequest, store: NotifyStore, rid: str) -> Doc:
    doc = await store.owned(rid, owner_of(req), req.session)
    if doc is None:
        raise NotFound(f"Subscription/{rid} is not known")
    return doc


def render(doc: Doc) -> Doc:
    """The stored Subscription with its current status (the worker moves it on)."""
    res = copy.deepcopy(doc["res"])
    res["status"] = doc["status"]
    if doc.get("error"):
        res["error"] = doc["error"]
    return res


async def status(ctx: ServerContext, req: FhirRequest, rid: str) -> FhirResponse:
    """Subscription/[id]/$status: a searchset Bundle holding the status Parameters
    (OperationDefinition backport-subscription-status)."""
    doc = await owned(ctx, req, NotifyStore(ctx.store.db), rid)
    params = backport.status_parameters(
        base=ctx.base_url,
        sub_id=rid,
        topic=doc["topic"],
        status=doc["status"],
        kind="query-status",
        events=int(doc.get("events", 0)),
        error=doc.get("error"),
    )
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": 1,
        "entry": [{"resource": params, "search": {"mode": "match"}}],
    }
    return FhirResponse(status=200, body=bundle)


async def search(ctx: ServerContext, req: FhirRequest, store: NotifyStore) -> FhirResponse:
    unknown = sorted({k for k, _ in req.params} - SEARCH_PARAMS)
    if unknown:
        raise BadRequest(
            f"Subscription is searched by {sorted(SEARCH_PARAMS)} only, not {unknown}",
            code="not-supported",
        )
    statuses = [s for k, v in req.params if k == "status" for s in v.split(",") if s]
    docs = await store.list_owned(owner_of(req), statuses)
    return FhirResponse(
        status=200,
        body={
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(docs),
            "entry": [
                {
                    "fullUrl": f"{ctx.base_url}/Subscription/{d['_id']}",
                    "resource": render(d),
                    "search": {"mode": "match"},
                }
                for d in docs
            ],
        },
    )


async def match_keys(
    ctx: ServerContext, req: FhirRequest, owner: str, wanted: backport.Requested
) -> list[str]:
    """The references the subscription listens for, all of them the caller's own."""
    topic = wanted.topic
    kind = owner.split("/", 1)[0]
    if owner and kind not in topic.subscribers:
        raise Forbidden(f"topic {topic.url} is for {sorted(topic.subscribers)} users only")
    value = wanted.filter_value
    if not owner:
        if value is None:
            raise Unprocessable(
                "with tokens off a Subscription needs a filter naming its reference",
                code="business-rule",
            )
        return [value]
    if topic.names == "self":
        if value is not None and value != owner:
            raise Forbidden(
                f"a Subscription to {topic.title!r} may only name the caller's own {kind}"
            )
        return [owner]
    pools = await pools_of(ctx, owner, req.session)
    if value is None:
        if not pools:
            raise Unprocessable("the caller belongs to no pool", code="business-rule")
        return pools
    if value not in pools:
        raise Forbidden(f"a Subscription to {topic.title!r} may only name a pool the caller is in")
    return [value]


async def create(ctx: ServerContext, req: FhirRequest, store: NotifyStore) -> FhirResponse:
    body = req.body
    if not isinstance(body, dict) or body.get("resourceType") != RT:
        raise BadRequest("the body must be a Subscription", code="structure")
    if not req.validated:
        ctx.validator.validate(body)
    wanted = backport.read_subscription(body, table(), production=ctx.settings.production)
    if ctx.settings.production and await endpoints.refused(
        wanted.endpoint, table().channel.denied_networks
    ):
        why = (
            "channel.endpoint points into a network this server does not deliver to "
            "(loopback, private or link-local addresses)"
        )
        raise Unprocessable(
            why,
            code="business-rule",
            issues=[
                Issue(
                    code="business-rule",
                    diagnostics=why,
                    expression=("Subscription.channel.endpoint",),
                )
            ],
        )
    owner = owner_of(req)
    keys = await match_keys(ctx, req, owner, wanted)
    now = now_utc()
    end = _end(wanted.end)
    if end is not None and end <= now:
        raise Unprocessable("Subscription.end is in the past", code="business-rule")
    rid = req.assigned_id or new_id()
    res = {k: v for k, v in body.items() if k not in ("id", "meta")}
    meta = dict(body.get("meta") or {})
    meta.update({"versionId": "1", "lastUpdated": backport._instant(now)})
    res = {"resourceType": RT, "id": rid, "meta": meta, **res, "status": "requested"}
    doc = {
        "_id": rid,
        "owner": owner,
        "topic": wanted.topic.url,
        "match": keys,
        "status": "requested",
        "endpoint": wanted.endpoint,
        "headers": list(wanted.headers),
        "payload": wanted.payload,
        "mime": wanted.mime_type,
        "heartbeat_s": wanted.heartbeat_s,
        "next_heartbeat": now + timedelta(seconds=wanted.heartbeat_s)
        if wanted.heartbeat_s
        else None,
        "end": end,
        "events": 0,
        "created": now,
        "res": res,
    }
    # The subscription and its handshake commit together (or neither does).
    handshake = NotifyStore.item("rest-hook", "handshake", sub=rid)
    if req.session is not None:
        await store.add_subscription(doc, req.session)
        await store.enqueue([handshake], req.session)
    else:
        async with ctx.store.client.start_session() as s, await s.start_transaction():
            await store.add_subscription(doc, s)
            await store.enqueue([handshake], s)
    return FhirResponse(
        status=201,
        body=render(doc),
        headers={"Location": f"{ctx.base_url}/Subscription/{rid}", "ETag": 'W/"1"'},
        location=f"Subscription/{rid}",
    )


def _end(raw: str | None) -> datetime | None:
    if raw is None:
        return None
    try:
        end = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise Unprocessable(f"Subscription.end {raw!r} is not an instant", code="value") from None
    return end if end.tzinfo is not None else end.replace(tzinfo=UTC)


def capability(resource: Doc) -> Doc:
    """The CapabilityStatement's Subscription entry: the topics advertised as the backport
    says (capabilitystatement-subscriptiontopic-canonical), the interactions offered; its
    operations are the operation table's ($status: operations/subscription_status.py)."""
    out = {k: v for k, v in resource.items() if k != "searchParam"}
    out["extension"] = [
        {"url": backport.TOPIC_CANONICAL, "valueCanonical": t.url} for t in table().topics
    ]
    out["supportedProfile"] = [backport.PROFILE]
    out["interaction"] = [{"code": c} for c in ("read", "delete", "create", "search-type")]
    out["versioning"] = "no-version"
    out["readHistory"] = False
    for key in ("updateCreate", "conditionalCreate", "conditionalUpdate"):
        out[key] = False
    out["conditionalDelete"] = "not-supported"
    out["searchParam"] = [
        {"name": "status", "type": "token", "documentation": "the caller's own, by status"}
    ]
    return out
