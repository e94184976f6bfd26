"""Run a `SearchRequest` against the `resources` collection (https://hl7.org/fhir/R4/search.html).

One query for the matches (criteria + compartment + cursor, sorted, `count + 1` rows to know
whether there is a next page), bounded sub-queries for chains and `_has`, narrowed queries for
`_include`/`_revinclude`. Every query carries `maxTimeMS`; running past it answers 503
(`TooCostly`), and every fan-out is capped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qsl

from pymongo.errors import ConnectionFailure, ExecutionTimeout, OperationFailure

from fhir_server.errors import BadRequest, ServiceUnavailable, TooCostly
from fhir_server.search import cursor as cur
from fhir_server.search.extract import reference_targets
from fhir_server.search.parse import Criterion, Include, SearchRequest, parse_search
from fhir_server.search.query import NOTHING, all_of, criterion_filter, reference_in, sort_field
from fhir_server.search.registry import Registry
from fhir_server.search.summary import apply

MAX_CHAIN_IDS = 1000  # ids a chain or _has may resolve to before it is too costly
MAX_INCLUDES = 1000  # included resources per page
MAX_ITERATE = 3  # rounds of _include:iterate
TypeFilter = Callable[[str], dict[str, Any]]


@dataclass
class SearchPage:
    """One page of results; `resources` and `included` are the `res` dicts as returned."""

    resources: list[dict[str, Any]] = field(default_factory=list)
    included: list[dict[str, Any]] = field(default_factory=list)
    total: int | None = None
    next_cursor: str | None = None
    prev_cursor: str | None = None
    compartment: str | None = None
    warnings: list[str] = field(default_factory=list)


_DIALECT: dict[int, bool] = {}


async def uses_elem_match(db: Any) -> bool:
    """True on MongoDB, False on SecantusDB (see query.py): asked once per client."""
    key = id(db.client)
    if key not in _DIALECT:
        info = await db.client.admin.command("buildInfo")
        _DIALECT[key] = "secantusVersion" not in info
    return _DIALECT[key]


class _Run:
    def __init__(
        self,
        db: Any,
        registry: Registry,
        max_time_ms: int,
        type_filter: TypeFilter | None,
        elem_match: bool,
    ) -> None:
        self.col = db["resources"]
        self.reg = registry
        self.ms = max_time_ms
        self.type_filter = type_filter
        self.secantus = not elem_match

    def scoped(self, rt: str | None, filt: dict[str, Any]) -> dict[str, Any]:
        """Add the caller's per-type filter (access policy) to a sub-query."""
        if self.type_filter is None or rt is None:
            return filt
        return all_of([filt, self.type_filter(rt)])

    async def find(
        self,
        filt: dict[str, Any],
        projection: dict[str, Any],
        *,
        sort: list[tuple[str, int]] | None = None,
        limit: int = 0,
    ) -> list[dict[str, Any]]:
        filt, hint = plan(filt, self.secantus)
        try:
            c = self.col.find(filt, projection, max_time_ms=self.ms)
            if hint:
                c = c.hint(hint)
            if sort:
                c = c.sort(sort)
            if limit:
                c = c.limit(limit)
            return [d async for d in c]
        except ExecutionTimeout as e:
            raise TooCostly("The search ran past its time budget; narrow it") from e
        except OperationFailure as e:
            if e.code == 50:
                raise TooCostly("The search ran past its time budget; narrow it") from e
            raise
        except ConnectionFailure as e:
            raise ServiceUnavailable("The database is unavailable") from e

    async def count(self, filt: dict[str, Any]) -> int:
        filt, hint = plan(filt, self.secantus)
        try:
            if hint:
                return int(await self.col.count_documents(filt, maxTimeMS=self.ms, hint=hint))
            return int(await self.col.count_documents(filt, maxTimeMS=self.ms))
        except ExecutionTimeout as e:
            raise TooCostly("Counting the results ran past its time budget") from e
        except ConnectionFailure as e:
            raise ServiceUnavailable("The database is unavailable") from e

    def comp_types(self, c: Criterion) -> list[str] | None:
        if c.type != "composite" or c.param is None:
            return None
        comps = [self.reg.by_url(x.definition) for x in c.param.components]
        return None if any(x is None for x in comps) else [x.type for x in comps if x]

    async def criterion(self, rt: str | None, c: Criterion) -> dict[str, Any]:
        if c.has is not None:
            h = c.has
            inner = await self.criterion(h.source_type, h.inner)
            docs = await self.find(
                self.scoped(h.source_type, all_of([{"rt": h.source_type}, inner])),
                {"ix.k": 1},
                limit=MAX_CHAIN_IDS + 1,
            )
            if len(docs) > MAX_CHAIN_IDS:
                raise TooCostly(f"{c.name} matches too many {h.source_type} resources; narrow it")
            ids = {
                t
                for d in docs
                for t in reference_targets(d.get("ix", {}), h.ref_code)
                if rt is None or t.startswith(f"{rt}/")
            }
            return {"_id": {"$in": sorted(ids)}} if ids else NOTHING
        if c.chain:
            targets: list[str] = []
            for t, sub in c.chain:
                f = await self.criterion(t, sub)
                docs = await self.find(
                    self.scoped(t, all_of([{"rt": t}, f])), {"_id": 1}, limit=MAX_CHAIN_IDS + 1
                )
                targets += [d["_id"] for d in docs]
                if len(targets) > MAX_CHAIN_IDS:
                    raise TooCostly(f"Chained parameter {c.name} matches too many resources")
            return reference_in(c.code, targets)
        return criterion_filter(c, resource_type=rt, elem_match=True, comp_types=self.comp_types(c))

    async def base_filter(self, req: SearchRequest, compartment: str | None) -> dict[str, Any]:
        parts: list[dict[str, Any]] = []
        if req.resource_type:
            parts.append({"rt": req.resource_type})
        elif req.types:
            parts.append({"rt": {"$in": list(req.types)}})
        if compartment:
            parts.append({"comp": compartment})
        if self.type_filter is not None:
            # The access policy narrows the main query too; "*" is its filter for a
            # search across types.
            parts.append(self.type_filter(req.resource_type or "*"))
        for c in req.criteria:
            parts.append(await self.criterion(req.resource_type, c))
        return all_of(parts)

    async def includes(
        self, page: SearchPage, docs: list[dict[str, Any]], req: SearchRequest
    ) -> None:
        seen = {d["_id"] for d in docs}
        frontier = docs
        for round_ in range(MAX_ITERATE + 1):
            incs = [i for i in req.includes if round_ == 0 or i.iterate]
            revs = [i for i in req.revincludes if round_ == 0 or i.iterate]
            if not frontier or not (incs or revs):
                return
            found: list[dict[str, Any]] = []
            ids = [t for d in frontier for i in incs for t in _targets(self.reg, d, i)]
            ids = [i for i in dict.fromkeys(ids) if i not in seen]
            by_type: dict[str, list[str]] = {}
            for i in ids:
                by_type.setdefault(i.split("/", 1)[0], []).append(i)
            for t, group in by_type.items():
                found += await self.find(
                    self.scoped(t, {"_id": {"$in": group}}),
                    {"res": 1, "ix.k": 1},
                    limit=MAX_INCLUDES + 1,
                )
            for r in revs:
                keys = [
                    f"{r.code}={d['_id']}"
                    for d in frontier
                    if r.target_type is None or d["_id"].startswith(f"{r.target_type}/")
                ]
                if keys:
                    found += await self.find(
                        self.scoped(r.source_type, {"rt": r.source_type, "ix.k": {"$in": keys}}),
                        {"res": 1, "ix.k": 1},
                        limit=MAX_INCLUDES + 1,
                    )
            fresh = [d for d in found if d["_id"] not in seen]
            fresh = list({d["_id"]: d for d in fresh}.values())
            room = MAX_INCLUDES - len(page.included)
            if len(fresh) > room:
                page.warnings.append(f"Included resources were capped at {MAX_INCLUDES}")
                fresh = fresh[:room]
            seen.update(d["_id"] for d in fresh)
            page.included += [apply(d["res"], req.summary, req.elements) for d in fresh]
            frontier = fresh
            if room <= len(fresh):
                return


RANGE_FIELDS = ("ix.lo", "ix.hi", "ix.s")


def plan(filt: dict[str, Any], secantus: bool) -> tuple[dict[str, Any], str | None]:
    """Index hint for SecantusDB (docs/search.md). Its planner scans the whole collection on
    any `$elemMatch` or regex, yet a range over a key array needs `$elemMatch` to hold key by
    key. Hinting the `(rt, field, _id)` index of the first such predicate keeps the scan
    inside the type (index scan on `rt`, predicate checked per document): correct, and no
    collection scan. MongoDB gets no hint: its planner bounds `$elemMatch` tightly."""
    if not secantus or not isinstance(filt.get("rt"), str):
        return filt, None
    if isinstance(filt.get("ix.k"), str | dict) and (
        isinstance(filt["ix.k"], str) or "$all" in filt["ix.k"]
    ):
        # An equality on the key array bounds the (rt, ix.k) index to the matching keys;
        # a range index would walk every resource of the type (bench/search.py: 75x slower).
        has_range = any(
            isinstance(filt.get(f), dict) and ("$regex" in filt[f] or "$elemMatch" in filt[f])
            for f in RANGE_FIELDS
        )
        return filt, "rt_ix_k" if has_range else None
    groups: list[dict[str, Any]] = [filt] + [g for g in filt.get("$and", []) if isinstance(g, dict)]
    for g in groups:
        for fname in RANGE_FIELDS:
            cond = g.get(fname)
            if isinstance(cond, dict) and ("$regex" in cond or "$elemMatch" in cond):
                return filt, "rt_" + fname.replace(".", "_")
    return filt, None


def _targets(reg: Registry, doc: dict[str, Any], inc: Include) -> list[str]:
    rt = doc["_id"].split("/", 1)[0]
    if inc.source_type != rt and inc.code != "*":
        return []
    ix = doc.get("ix", {})
    if inc.code == "*":
        codes = [c for c, p in reg.params_for(rt).items() if p.type == "reference"]
    else:
        codes = [inc.code]
    out = [t for c in codes for t in reference_targets(ix, c)]
    if inc.target_type:
        out = [t for t in out if t.startswith(f"{inc.target_type}/")]
    return out


def _sort(req: SearchRequest) -> list[tuple[str, int]]:
    keys = [(sort_field(k.code), -1 if k.descending else 1) for k in req.sort]
    if not any(f == "_id" for f, _ in keys):
        keys.append(("_id", 1))  # a total order, so cursors never skip or repeat a row
    return keys


async def run_search(
    db: Any,
    registry: Registry,
    req: SearchRequest,
    *,
    compartment: str | None = None,
    max_time_ms: int = 5000,
    type_filter: TypeFilter | None = None,
) -> SearchPage:
    """Execute `req`: one page of matches, their includes, the total and paging cursors.

    `compartment` ("Patient/p1") restricts to that patient compartment
    (https://hl7.org/fhir/R4/compartmentdefinition.html); `type_filter(rt)` is ANDed into
    every chain, `_has` and include sub-query on type `rt` (the access policy), since those
    read types the main request does not name.
    """
    run = _Run(db, registry, max_time_ms, type_filter, await uses_elem_match(db))
    page = SearchPage(compartment=compartment)
    filt = await run.base_filter(req, compartment)
    if req.summary == "count" or req.count == 0:
        page.total = await run.count(filt)
        return page
    sort = _sort(req)
    direction = "a"
    query = filt
    if req.cursor:
        direction, values = cur.read(req.cursor, sort)
        eff = sort if direction == "a" else [(f, -o) for f, o in sort]
        query = all_of([filt, cur.boundary(eff, values)])
    eff_sort = sort if direction == "a" else [(f, -o) for f, o in sort]
    proj: dict[str, Any] = {"res": 1, "lu": 1, "ix.o": 1}
    if req.includes:
        proj["ix.k"] = 1
    docs = await run.find(query, proj, sort=eff_sort, limit=req.count + 1)
    more = len(docs) > req.count
    docs = docs[: req.count]
    if direction == "b":
        docs.reverse()
    if docs:
        if direction == "a":
            page.next_cursor = cur.make(docs[-1], sort, "a") if more else None
            page.prev_cursor = cur.make(docs[0], sort, "b") if req.cursor else None
        else:
            page.next_cursor = cur.make(docs[-1], sort, "a")
            page.prev_cursor = cur.make(docs[0], sort, "b") if more else None
    page.resources = [apply(d["res"], req.summary, req.elements) for d in docs]
    if req.total in ("accurate", "estimate") or (req.total is None and not req.cursor):
        page.total = len(docs) if not more and not req.cursor else await run.count(filt)
    if req.includes or req.revincludes:
        await run.includes(page, docs, req)
    return page


async def count(
    db: Any,
    registry: Registry,
    req: SearchRequest,
    *,
    compartment: str | None = None,
    max_time_ms: int = 5000,
    type_filter: TypeFilter | None = None,
) -> int:
    """Number of matches (for `_summary=count` and `_total`)."""
    run = _Run(db, registry, max_time_ms, type_filter, await uses_elem_match(db))
    return await run.count(await run.base_filter(req, compartment))


async def criteria_filter(db: Any, registry: Registry, req: SearchRequest) -> dict[str, Any]:
    """The MongoDB filter of `req`'s criteria alone (for access policies and scope filters:
    a policy rule is a search, built by the same parser and query builder)."""
    run = _Run(db, registry, 5000, None, await uses_elem_match(db))
    return await run.base_filter(req, None)


async def find_matches(
    db: Any,
    registry: Registry,
    resource_type: str,
    query_string: str,
    limit: int = 2,
    type_filter: TypeFilter | None = None,
) -> list[dict[str, Any]]:
    """Resources matching a conditional-interaction query (`identifier=http://x|123&active=true`),
    parsed strictly (https://hl7.org/fhir/R4/http.html#cond-update). At most `limit` returned:
    the caller only needs to tell 0, 1 and many apart."""
    params = parse_qsl(query_string.lstrip("?"), keep_blank_values=True)
    if not params:
        raise BadRequest("A conditional interaction needs search parameters")
    req = parse_search(resource_type, params, registry, strict=True)
    page = await run_search(
        db, registry, replace(req, count=limit, total="none"), type_filter=type_filter
    )
    return page.resources
