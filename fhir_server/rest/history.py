"""History at instance, type and system level: https://hl7.org/fhir/R4/http.html#history"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import orjson

from fhir_server.access.screen import admitted, screen
from fhir_server.access.versions import history_filter
from fhir_server.context import ServerContext
from fhir_server.errors import BadRequest, Forbidden, TooCostly
from fhir_server.rest.headers import http_date
from fhir_server.rest.interactions import visible_version
from fhir_server.rest.messages import FhirRequest, FhirResponse
from fhir_server.storage.store import Version, instant

Doc = dict[str, Any]
DEFAULT_COUNT = 50
MAX_COUNT = 500
# Versions of one deleted resource checked in memory for its history (beyond: too costly).
MAX_DELETED_VERSIONS = 10_000


def _parse_instant(value: str) -> datetime:
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"_since {value!r} is not a FHIR instant") from None
    if t.tzinfo is None:
        raise BadRequest(f"_since {value!r} needs a time zone (a FHIR instant)")
    return t


def _encode_cursor(doc: Doc) -> str:
    raw = orjson.dumps([doc["lu"].isoformat(), doc["_id"], doc["vid"]])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(token: str) -> tuple[datetime, str, int]:
    try:
        lu, key, vid = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        return datetime.fromisoformat(lu), str(key), int(vid)
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise BadRequest("the _cursor paging token is not valid") from None


def _entry(ctx: ServerContext, doc: Doc) -> Doc:
    v = Version.from_doc(doc)
    url = f"{v.rt}/{v.id}"
    entry: Doc = {"fullUrl": f"{ctx.base_url}/{url}"}
    if v.resource is not None:
        entry["resource"] = v.resource
    method = "DELETE" if v.deleted else ("POST" if v.method == "POST" else "PUT")
    entry["request"] = {"method": method, "url": url if method != "POST" else v.rt}
    status = "204" if v.deleted else ("201" if v.vid == 1 else "200")
    entry["response"] = {"status": status, "etag": v.etag, "lastModified": instant(v.lu)}
    return entry


def _screened(ctx: ServerContext, req: FhirRequest, doc: Doc) -> bool:
    res = doc.get("res")
    return res is None or screen(req.policy, ctx.store.indexer, res, where="history", stored=doc)


async def _history_filter(ctx: ServerContext, req: FhirRequest, rt: str | None) -> dict[str, Any]:
    """The policy as a filter on history versions, which keep compartments but no search
    entries: a query-restricted scope cannot be applied to them, so it gets no history."""
    policy = req.policy
    if policy.scope_filters and (rt is None or rt in policy.scope_filters):
        raise Forbidden("history is not available under a query-restricted scope")
    return await history_filter(ctx.store.for_type(rt), policy, rt)


async def _deleted_versions(
    ctx: ServerContext,
    req: FhirRequest,
    rt: str,
    rid: str,
    since: datetime | None,
    before: tuple[datetime, str, int] | None,
    count: int,
) -> tuple[list[Doc], int]:
    """The versions of a deleted resource the caller may see: its tombstone (already found
    visible) and every earlier version the policy admits on its own content, as vread
    checks it. The current resources no longer name it, so the policy's history filter
    (built from them) cannot; one resource's versions are few, so they are checked here."""
    store = ctx.store.for_type(rt)
    docs = await store.history_page(rt=rt, rid=rid, since=since, count=MAX_DELETED_VERSIONS + 1)
    if len(docs) > MAX_DELETED_VERSIONS:
        raise TooCostly(f"{rt}/{rid} has too many versions to check; use _since")
    shown = [
        d
        for d in docs
        if d.get("res") is None or admitted(req.policy, ctx.store.indexer, d["res"], d)
    ]
    page = [d for d in shown if before is None or d["vid"] < before[2]]
    return page[: count + 1], len(shown)


async def history(
    ctx: ServerContext, req: FhirRequest, rt: str | None, rid: str | None
) -> FhirResponse:
    known = {"_since", "_count", "_cursor", "_format", "_pretty", "_at", "_list", "_sort"}
    for name, _ in req.params:
        if name not in known:
            raise BadRequest(f"history does not take the parameter {name!r}")
    since = _parse_instant(req.param("_since") or "") if req.param("_since") else None
    raw_count = req.param("_count") or str(DEFAULT_COUNT)
    if not raw_count.isdigit():
        raise BadRequest(f"_count {raw_count!r} is not a number")
    count = max(1, min(int(raw_count), MAX_COUNT))
    before = _decode_cursor(req.param("_cursor") or "") if req.param("_cursor") else None
    # A type kept apart (the audit log) has its history in its own collection.
    store = ctx.store.for_type(rt)
    hidden = await _history_filter(ctx, req, rt) if req.policy.restricted else None
    deleted = False
    if rid is not None and hidden is not None:
        assert rt is not None
        # An instance's history shows only while the resource, or its tombstone, is visible.
        deleted = (await visible_version(ctx, req, rt, rid)).deleted
    if deleted:
        assert rt is not None and rid is not None
        docs, total = await _deleted_versions(ctx, req, rt, rid, since, before, count)
    else:
        docs = await store.history_page(
            rt=rt, rid=rid, since=since, before=before, count=count + 1, visible=hidden
        )
    if rid is not None and not docs and before is None:
        assert rt is not None
        if await store.tombstone(rt, rid) is None:
            await store.read(rt, rid)  # raises 404 for an id that never existed
    more = len(docs) > count
    docs = docs[:count]
    if not deleted:
        total = await store.history_total(rt=rt, rid=rid, since=since, visible=hidden)
    path = "/".join(p for p in (rt, rid) if p)
    base = f"{ctx.base_url}/{path}/_history" if path else f"{ctx.base_url}/_history"
    keep = [(k, v) for k, v in req.params if k in ("_since", "_count")]
    links = [{"relation": "self", "url": f"{base}?{urlencode(req.params)}" if req.params else base}]
    if more:
        nxt = keep + [("_cursor", _encode_cursor(docs[-1]))]
        links.append({"relation": "next", "url": f"{base}?{urlencode(nxt)}"})
    bundle: Doc = {
        "resourceType": "Bundle",
        "type": "history",
        "total": total,
        "link": links,
        "entry": [_entry(ctx, d) for d in docs if _screened(ctx, req, d)],
    }
    headers = {"Last-Modified": http_date(docs[0]["lu"])} if docs else {}
    return FhirResponse(status=200, body=bundle, headers=headers)
