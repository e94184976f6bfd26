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

from fhir_server.db.dialect import DIALECT as _DIALECT  # noqa: F401 - tests set it
from fhir_server.db.dialect import uses_elem_match
from fhir_server.errors import BadRequest, TooCostly
from fhir_server.search import cursor as cur
from fhir_server.search import effective, secantus_plan
from fhir_server.search.extract import reference_targets
from fhir_server.search.parse import Criterion, Include, SearchRequest, parse_search
from fhir_server.search.query import (
    NOTHING,
    all_of,
    criterion_filter,
    in_value_sets,
    keys_in,
    reference_in,
    reference_keys,
    sort_field,
)
from fhir_server.search.registry import Registry
from fhir_server.search.summary import apply
from fhir_server.search.valuesets import stored_lookup
from fhir_server.storage.audit_store import AuditStore
from fhir_server.storage.store import ResourceStore, as_store

MAX_CHAIN_IDS = 1000  # ids a chain or _has may resolve to before it is too costly
MAX_INCLUDES = 1000  # included resources per page
MAX_ITERATE = 3  # rounds of _include:iterate
TypeFilter = Callable[[str], dict[str, Any]]
# Whether the caller may look into a Patient compartment ("Patient/x"): the access policy's
# `sees_compartment`, as the compartment search asks it.
ShownPatient = Callable[[str], bool]


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
    # `Type/id` -> the stored `comp` and `ak` of each resource, which the post-check tests
    # (access/screen.py) instead of indexing the resource again.
    stored_access: dict[str, dict[str, Any]] = field(default_factory=dict)

    def note_compartments(self, docs: list[dict[str, Any]]) -> None:
        for d in docs:
            self.stored_access[str(d["_id"])] = {
                "comp": d.get("comp") or [],
                "ak": d.get("ak"),
                "wf": d.get("wf"),
            }


class _Run:
    def __init__(
        self,
        store: ResourceStore,
        registry: Registry,
        type_filter: TypeFilter | None,
        elem_match: bool,
        shown_patient: ShownPatient | None = None,
    ) -> None:
        self.store = store
        self.reg = registry
        self.type_filter = type_filter
        self.shown_patient = shown_patient
        self.secantus = not elem_match
        # SecantusDB: a page's re-checked matches, reused for its total (secantus_plan.py).
        self.memo: secantus_plan.Memo = {}

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
        rt: str | None = None,
    ) -> list[dict[str, Any]]:
        """One query on the collection that holds type `rt` (the audit log's for
        AuditEvent: storage/audit_store.py)."""
        store = self.store.for_type(rt)
        if self.secantus and (store is self.store or "$or" in filt or "$and" in filt):
            # The audit log too when the filter is an `$or` or `$and` (the access policy's, for a
            # patient and the people they speak for): SecantusDB would scan the log for it,
            # while each branch is looked up in the patient's compartment.
            return await secantus_plan.find(
                store, filt, projection, sort=sort, limit=limit, memo=self.memo
            )
        if self.secantus:
            # The audit log: its point clause first, as before secantus_plan, whose looser
            # ranges were measured on the `resources` indexes, not on the log's own.
            filt = secantus_plan.point_first(filt)
        return await store.find(filt, projection, sort=sort, limit=limit)

    async def count(self, filt: dict[str, Any], rt: str | None = None) -> int:
        store = self.store.for_type(rt)
        if self.secantus and (store is self.store or "$or" in filt or "$and" in filt):
            return await secantus_plan.count(store, filt, self.memo)
        if self.secantus:
            filt = secantus_plan.point_first(filt)
        return await store.count(filt)

    def served(
        self,
        rt: str | None,
        codes: list[str],
        filt: dict[str, Any] | None = None,
        modifier: str | None = None,
    ) -> None:
        """Refuse a search that a separately stored type's collection does not index
        (the audit log keeps the keys of a few parameters only: profiles/access/audit_log.json):
        run anyway, it would scan, and miss what it keeps no keys for."""
        store = self.store.for_type(rt)
        if not isinstance(store, AuditStore):
            return
        bad = [c for c in codes if c not in store.searchable and c not in ("_id", "*")]
        if modifier in store.refused_modifiers:
            bad = [f"{c}:{modifier}" for c in codes]
        if filt is not None and not bad:
            bad = [f"{f} (this modifier)" for f in _fields(filt) if f not in store.indexed]
        if filt is not None and not bad:
            bad = [f"{k} (a system alone)" for k in store.unlooked_keys(filt)]
        if bad:
            served = ", ".join(sorted(store.searchable))
            raise BadRequest(
                f"{rt} cannot be searched by {', '.join(bad)} on this server; "
                f"its log is searched by {served}",
                code="not-supported",
            )

    def comp_types(self, c: Criterion) -> list[str] | None:
        if c.type != "composite" or c.param is None:
            return None
        comps = [self.reg.by_url(x.definition) for x in c.param.components]
        return None if any(x is None for x in comps) else [x.type for x in comps if x]

    async def criterion(self, rt: str | None, c: Criterion) -> dict[str, Any]:
        f = await self._criterion(rt, c)
        self.served(rt, [c.code], None if c.chain or c.has else f, c.modifier)
        return f

    async def _criterion(self, rt: str | None, c: Criterion) -> dict[str, Any]:
        if c.has is not None:
            h = c.has
            inner = await self.criterion(h.source_type, h.inner)
            self.served(h.source_type, [h.ref_code])
            docs = await self.find(
                self.scoped(h.source_type, all_of([{"rt": h.source_type}, inner])),
                {"ix.k": 1},
                limit=MAX_CHAIN_IDS + 1,
                rt=h.source_type,
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
                    self.scoped(t, all_of([{"rt": t}, f])),
                    {"_id": 1},
                    limit=MAX_CHAIN_IDS + 1,
                    rt=t,
                )
                targets += [d["_id"] for d in docs]
                if len(targets) > MAX_CHAIN_IDS:
                    raise TooCostly(f"Chained parameter {c.name} matches too many resources")
            return reference_in(c.code, targets)
        if c.type == "token" and c.modifier in ("in", "not-in"):
            return await in_value_sets(c, stored_lookup(self.find, self.scoped))
        if self.shown_patient is not None and c.type == "reference" and c.modifier is None:
            return self._shown_references(c)
        read_time = effective.filter_for(rt, c)  # a value computed on read (effective.py)
        if read_time is not None:
            return read_time
        return criterion_filter(c, resource_type=rt, elem_match=True, comp_types=self.comp_types(c))

    def _shown_references(self, c: Criterion) -> dict[str, Any]:
        """A plain reference criterion whose `Patient/x` values the caller may not look into
        match nothing, as for a patient that does not exist: a Group (or any resource the
        caller may read) naming a hidden patient must not say so through its search keys
        (`Group?member=Patient/<hidden>`), when its shown members leave that patient out
        (access/members.py). The same answer as the chain `member:Patient._id=x`, which runs
        under the policy. docs/access.md, "Groups"."""
        keys = [k for v in c.values for k in reference_keys(c, v.value)]
        kept = [k for k in keys if self._shown_key(c.code, k)]
        return keys_in("ix.k", kept) if kept else NOTHING

    def _shown_key(self, code: str, key: str) -> bool:
        target = key.removeprefix(f"{code}=")
        if not target.startswith("Patient/") or self.shown_patient is None:
            return True
        return self.shown_patient(target)

    async def base_filter(
        self,
        req: SearchRequest,
        compartment: str | None,
        *,
        narrow: bool = True,
        policy_main: bool = True,
    ) -> dict[str, Any]:
        parts: list[dict[str, Any]] = []
        if req.resource_type:
            parts.append({"rt": req.resource_type})
        elif req.types:
            parts.append({"rt": {"$in": list(req.types)}})
        if compartment:
            parts.append({"comp": compartment})
        if self.type_filter is not None and policy_main:
            # The access policy narrows the main query too; "*" is its filter for a
            # search across types.
            parts.append(self.type_filter(req.resource_type or "*"))
        implied: str | None = None
        for c in req.criteria:
            f = await self.criterion(req.resource_type, c)
            implied = implied or implied_compartment(self.reg, req.resource_type, c, f)
            parts.append(f)
        filt = all_of(parts)
        # SecantusDB serves `{rt, ix.k: key}` whole from `(rt, ix.k, _id)`; a third field
        # would send it to a lookup of all the patient's resources (bench/search.py: 5x slower).
        exact = self.secantus and set(filt) == {"rt", "ix.k"} and isinstance(filt["ix.k"], str)
        if narrow and implied and not exact and "comp" not in filt and "$and" not in filt:
            # Redundant for the answer, decisive for the plan: it lets both databases
            # bound the scan by the patient (see `implied_compartment`).
            filt["comp"] = implied
        return filt

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
            ids = [t for d in frontier for i in incs for t in include_targets(self.reg, d, i)]
            ids = [i for i in dict.fromkeys(ids) if i not in seen]
            by_type: dict[str, list[str]] = {}
            for i in ids:
                by_type.setdefault(i.split("/", 1)[0], []).append(i)
            for t, group in by_type.items():
                found += await self.find(
                    self.scoped(t, {"_id": {"$in": group}}),
                    {"res": 1, "ix.k": 1, "comp": 1, "ak": 1, "wf": 1},
                    limit=MAX_INCLUDES + 1,
                    rt=t,
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
                        {"res": 1, "ix.k": 1, "comp": 1, "ak": 1, "wf": 1},
                        limit=MAX_INCLUDES + 1,
                        rt=r.source_type,
                    )
            fresh = [d for d in found if d["_id"] not in seen]
            fresh = list({d["_id"]: d for d in fresh}.values())
            room = MAX_INCLUDES - len(page.included)
            if len(fresh) > room:
                page.warnings.append(f"Included resources were capped at {MAX_INCLUDES}")
                fresh = fresh[:room]
            seen.update(d["_id"] for d in fresh)
            page.note_compartments(fresh)
            page.included += [apply(d["res"], req.summary, req.elements) for d in fresh]
            frontier = fresh
            if room <= len(fresh):
                return


def plan(filt: dict[str, Any], secantus: bool) -> tuple[dict[str, Any], str | None]:
    """The filter with SecantusDB's point clause first, and an index hint (always None).

    MongoDB's planner chooses among the indexes itself. On SecantusDB `_Run` runs every
    query through `secantus_plan` (point clause first, ranges on a looser index range
    re-checked in memory); this is its first step alone, for callers that send one filter
    themselves (bench/search.py). A `hint()` on SecantusDB walks the WHOLE index, so none
    is given.
    """
    return (secantus_plan.point_first(filt) if secantus else filt), None


_PATIENT_ONLY = ".where(resolve() is Patient)"
_IMPLIES: dict[tuple[int, str, str], tuple[bool, bool]] = {}


def _compartment_facts(reg: Registry, rt: str, code: str) -> tuple[bool, bool]:
    """(implies the compartment, references only Patients) for parameter `code` of `rt`,
    decided once from the vendored definitions (see `implies_compartment`)."""
    key = (id(reg), rt, code)
    if key not in _IMPLIES:
        comp = reg.compartment_params(rt)
        params = reg.params_for(rt)

        def paths(c: str) -> set[str]:
            p = params.get(c)
            exprs = p.expression.split("|") if p is not None else []
            return {e.strip() for e in exprs if e.strip().startswith(f"{rt}.")}

        allowed = {x for c in comp for x in paths(c)}
        mine = paths(code)
        narrowed = {x.removesuffix(_PATIENT_ONLY) for x in mine}
        param = params.get(code)
        only = param is not None and (
            param.target == ("Patient",)
            or (bool(mine) and all(x.endswith(_PATIENT_ONLY) for x in mine))
        )
        _IMPLIES[key] = (code in comp or (bool(mine) and narrowed <= allowed), only)
    return _IMPLIES[key]


def implies_compartment(reg: Registry, rt: str, code: str) -> bool:
    """True when every Patient that parameter `code` of `rt` references puts the resource in
    that Patient's compartment: `code` is one of the type's compartment parameters, or its
    path (for `rt`) is one of theirs narrowed by `.where(resolve() is Patient)` (Observation
    `patient` is `subject` narrowed so)."""
    return _compartment_facts(reg, rt, code)[0]


def implied_compartment(
    reg: Registry, rt: str | None, c: Criterion, filt: dict[str, Any]
) -> str | None:
    """`Patient/x` when criterion `c` (built into `filt`) matches only resources in Patient
    x's compartment: one reference `code=Patient/x` (or `code=x` on a parameter that only
    references Patients) on a parameter that implies the compartment.

    Adding `comp: Patient/x` changes no answer, but it is what lets the portal's hot queries
    ("this patient's Observations, newest first") use the `(comp, rt, ix.o.date, _id)`
    index on MongoDB and the compartment lookup on SecantusDB."""
    key = filt.get("ix.k")
    if rt is None or c.type != "reference" or set(filt) != {"ix.k"} or not isinstance(key, str):
        return None
    target = key.removeprefix(f"{c.code}=")
    if target == key or not target:
        return None
    implies, patient_only = _compartment_facts(reg, rt, c.code)
    if "/" not in target and patient_only:
        target = f"Patient/{target}"  # the id alone: the one type it can be
    if not implies or not target.startswith("Patient/") or "/" in target[8:]:
        return None
    return target


def include_targets(reg: Registry, doc: dict[str, Any], inc: Include) -> list[str]:
    """`Type/id` targets that `_include` `inc` names in stored document `doc`."""
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


def stored_type(store: ResourceStore, req: SearchRequest) -> tuple[SearchRequest, str | None]:
    """`req` and the type whose store answers its main query: its type, or None for the
    `resources` collection. A type kept apart (the audit log) is searched on its own: a
    system search covers `resources` (docs/storage.md, "The audit log"); one whose `_type`
    is that type alone runs as a search of the type, the criteria it may use being common
    ones."""
    if req.resource_type is not None:
        return req, req.resource_type
    apart = [t for t in req.types if store.for_type(t) is not store]
    if apart and len(req.types) > 1:
        raise BadRequest(
            f"{', '.join(apart)} cannot be searched together with other types; search it alone",
            code="not-supported",
        )
    if not apart:
        return req, None
    return replace(req, resource_type=apart[0], types=()), apart[0]


def _fields(filt: Any) -> set[str]:
    """The stored fields a filter tests (`ix.k` as `k`, `lu`), at any depth."""
    found: set[str] = set()
    if isinstance(filt, dict):
        for key, value in filt.items():
            if key.startswith("ix."):
                found.add(key.split(".")[1])
            elif key == "lu":
                found.add("lu")
            found |= _fields(value)
    elif isinstance(filt, list):
        for value in filt:
            found |= _fields(value)
    return found


def sort_keys(req: SearchRequest) -> list[tuple[str, int]]:
    """The MongoDB sort of `req`, ending in `_id` so the order is total (cursors never skip
    or repeat a row). The `_id` tie-break runs in the direction of the key before it, so one
    ascending index `(..., key, _id)` serves `_sort=key` forwards and `_sort=-key`
    backwards; a mixed `{key: -1, _id: 1}` would need a sort stage on MongoDB."""
    keys = [(sort_field(k.code), -1 if k.descending else 1) for k in req.sort]
    if not any(f == "_id" for f, _ in keys):
        keys.append(("_id", keys[-1][1] if keys else 1))
    return keys


async def run_search(
    db: Any,
    registry: Registry,
    req: SearchRequest,
    *,
    compartment: str | None = None,
    max_time_ms: int | None = None,
    type_filter: TypeFilter | None = None,
    shown_patient: ShownPatient | None = None,
) -> SearchPage:
    """Execute `req`: one page of matches, their includes, the total and paging cursors.

    `compartment` ("Patient/p1") restricts to that patient compartment
    (https://hl7.org/fhir/R4/compartmentdefinition.html); `type_filter(rt)` is ANDed into
    every chain, `_has` and include sub-query on type `rt` (the access policy), since those
    read types the main request does not name. `shown_patient("Patient/x")` says whether the
    caller may look into that patient's compartment: a reference value naming one it may not
    matches nothing (`_Run._shown_references`).
    """
    store = as_store(db, max_time_ms)
    run = _Run(store, registry, type_filter, await uses_elem_match(store.db), shown_patient)
    page = SearchPage(compartment=compartment)
    req, rt = stored_type(store, req)
    run.served(rt, [k.code for k in req.sort])
    for inc in (*req.includes, *req.revincludes):
        run.served(inc.source_type, [inc.code])
    filt = await run.base_filter(req, compartment)
    if req.summary == "count" or req.count == 0:
        page.total = await run.count(filt, rt)
        return page
    sort = sort_keys(req)
    direction = "a"
    query = filt
    if req.cursor:
        direction, values = cur.read(req.cursor, sort)
        eff = sort if direction == "a" else [(f, -o) for f, o in sort]
        query = all_of([filt, cur.boundary(eff, values)])
    eff_sort = sort if direction == "a" else [(f, -o) for f, o in sort]
    # The sort values the cursors are made of, not every parameter's (`ix.o`).
    proj: dict[str, Any] = {"res": 1, "lu": 1, "comp": 1, "ak": 1, "wf": 1}
    proj.update((f, 1) for f, _ in sort if f.startswith("ix."))
    if req.includes:
        proj["ix.k"] = 1
    docs = await run.find(query, proj, sort=eff_sort, limit=req.count + 1, rt=rt)
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
    page.note_compartments(docs)
    page.resources = [apply(d["res"], req.summary, req.elements) for d in docs]
    if req.total in ("accurate", "estimate") or (req.total is None and not req.cursor):
        page.total = len(docs) if not more and not req.cursor else await run.count(filt, rt)
    if req.includes or req.revincludes:
        await run.includes(page, docs, req)
    return page


async def count(
    db: Any,
    registry: Registry,
    req: SearchRequest,
    *,
    compartment: str | None = None,
    max_time_ms: int | None = None,
    type_filter: TypeFilter | None = None,
) -> int:
    """Number of matches (for `_summary=count` and `_total`)."""
    store = as_store(db, max_time_ms)
    run = _Run(store, registry, type_filter, await uses_elem_match(store.db))
    req, rt = stored_type(store, req)
    return await run.count(await run.base_filter(req, compartment), rt)


async def criteria_filter(
    db: Any, registry: Registry, req: SearchRequest, type_filter: TypeFilter | None = None
) -> dict[str, Any]:
    """The MongoDB filter of `req`'s criteria alone (for access policies and scope filters:
    a policy rule is a search, built by the same parser and query builder). Without the
    implied compartment of `search_filter`: a policy ANDs this into other filters, where a
    second `comp` condition would only split the conjunction.

    `type_filter` narrows the sub-queries (`_has`, chains, `:in` value sets) as in
    `run_search`, but not the criteria themselves: a query-qualified scope's `_has` must
    not see what its caller may not (it would answer yes/no about hidden data)."""
    store = as_store(db, None)
    run = _Run(store, registry, type_filter, await uses_elem_match(store.db))
    return await run.base_filter(req, None, narrow=False, policy_main=False)


async def search_filter(
    db: Any, registry: Registry, req: SearchRequest, compartment: str | None = None
) -> dict[str, Any]:
    """The filter of `run_search`'s main query (before `plan`), for benchmarks and explain
    tests that must ask the database exactly what the server asks."""
    store = as_store(db, None)
    run = _Run(store, registry, None, await uses_elem_match(store.db))
    return await run.base_filter(req, compartment)


async def find_matches(
    db: Any,
    registry: Registry,
    resource_type: str,
    query_string: str,
    limit: int = 2,
    type_filter: TypeFilter | None = None,
    max_time_ms: int | None = None,
    shown_patient: ShownPatient | None = None,
) -> list[dict[str, Any]]:
    """Resources matching a conditional-interaction query (`identifier=http://x|123&active=true`),
    parsed strictly (https://hl7.org/fhir/R4/http.html#cond-update). At most `limit` returned:
    the caller only needs to tell 0, 1 and many apart."""
    params = parse_qsl(query_string.lstrip("?"), keep_blank_values=True)
    if not params:
        raise BadRequest("A conditional interaction needs search parameters")
    req = parse_search(resource_type, params, registry, strict=True)
    page = await run_search(
        db,
        registry,
        replace(req, count=limit, total="none"),
        type_filter=type_filter,
        max_time_ms=max_time_ms,
        shown_patient=shown_patient,
    )
    return page.resources
