"""`Patient/[id]/$everything` and `Patient/$everything`
(https://hl7.org/fhir/R4/patient-operation-everything.html).

The answer is a searchset Bundle in two phases: the Patient(s) first, then every resource of
their patient compartments (the `comp` field each stored document carries), type by type in
`_id` order, with the resources outside any compartment that they reference as
`search.mode = include` (everything_includes.py, one query per target type and page). Each
type is one ordinary search (`run_search`): the access policy's `type_filter` is ANDed into
it (and into the include queries), the care-date range and `_since` are search criteria, and
the keyset cursor of search pages through it. The cursor of a page names (phase, last
`_id`), so the next page stays right while data changes. Every outgoing resource passes the
post-check (`screen`).
"""

from __future__ import annotations

from typing import Any

from fhir_server.access.compartments import compartment_types
from fhir_server.access.screen import screen
from fhir_server.context import ServerContext
from fhir_server.errors import BadRequest
from fhir_server.exchange import everything_includes as includes
from fhir_server.exchange.care_dates import care_date_criteria
from fhir_server.exchange.everything_params import EverythingParams
from fhir_server.rest.interactions import read_visible
from fhir_server.rest.messages import FhirRequest, FhirResponse
from fhir_server.search import cursor as cur
from fhir_server.search.bundle import searchset_bundle
from fhir_server.search.execute import MAX_INCLUDES, SearchPage, TypeFilter, run_search
from fhir_server.search.parse import Criterion, SearchRequest, parse_search
from fhir_server.search.query import all_of

Doc = dict[str, Any]
# The page cursor: phase 1 lists Patients, phase 2 the compartments' other resources.
PAGE_SORT: cur.Sort = [("p", 1), ("_id", 1)]
ID_SORT: cur.Sort = [("_id", 1)]
# "In some patient compartment": `comp` holds only `Patient/<id>` strings, and `$gt ""`
# matches any non-empty one (bounded on the `(comp, rt)` index on MongoDB).
IN_A_PATIENT: Doc = {"comp": {"$gt": ""}}


def _read_cursor(text: str | None) -> tuple[int, str | None]:
    if text is None:
        return 1, None
    _, (phase, last) = cur.read(text, PAGE_SORT)
    if phase not in (1, 2) or not (last is None or isinstance(last, str)):
        raise BadRequest("The paging cursor does not belong to this operation")
    return phase, last


def _make_cursor(phase: int, last: str | None) -> str:
    return cur.make({"p": phase, "_id": last}, PAGE_SORT, "a")


def _ref(resource: Doc) -> str:
    return f"{resource.get('resourceType')}/{resource.get('id')}"


class _Pager:
    """Fills one page: `count` matches across the phases, their includes, the next cursor."""

    def __init__(
        self, ctx: ServerContext, req: FhirRequest, params: EverythingParams, patient: str | None
    ) -> None:
        self.ctx, self.req, self.params = ctx, req, params
        self.patient = patient  # "Patient/<id>" at instance level, None at type level
        policy = req.policy
        self.policy_filter: TypeFilter | None = policy.type_filter if policy.restricted else None
        self.page = SearchPage()
        self.remaining = params.count

    def _narrow(self, main_type: str) -> TypeFilter | None:
        """The per-type filter handed to search: the policy's, plus (type level) membership
        of some patient compartment for the searched type itself."""
        policy = self.policy_filter
        if self.patient is not None:
            return policy

        def narrow(rt: str) -> Doc:
            own = policy(rt) if policy is not None else {}
            return all_of([own, IN_A_PATIENT]) if rt == main_type else own

        return narrow

    async def _search(
        self,
        rt: str,
        criteria: tuple[Criterion, ...],
        after: str | None,
        type_filter: TypeFilter | None,
    ) -> tuple[SearchPage, str | None]:
        """One search of `rt` for the rest of the page; returns it and its last `_id`."""
        sreq = SearchRequest(
            resource_type=rt,
            criteria=criteria,
            count=self.remaining,
            total="none",
            cursor=cur.make({"_id": after}, ID_SORT, "a") if after else None,
        )
        found = await run_search(
            self.ctx.store,
            self.ctx.registry,
            sreq,
            compartment=self.patient if rt != "Patient" else None,
            max_time_ms=self.ctx.settings.query_max_time_ms,
            type_filter=type_filter,
        )
        self.page.resources += found.resources
        self.page.stored_access.update(found.stored_access)
        self.remaining -= len(found.resources)
        last = _ref(found.resources[-1]) if found.resources else None
        return found, last

    async def patients(self, after: str | None) -> bool:
        """Phase 1; True when the page is full (the next cursor is then set)."""
        criteria: tuple[Criterion, ...] = ()
        if self.patient is not None:
            pid = self.patient.split("/", 1)[1]
            criteria = parse_search("Patient", [("_id", pid)], self.ctx.registry).criteria
        found, last = await self._search("Patient", criteria, after, self.policy_filter)
        if found.next_cursor:
            self.page.next_cursor = _make_cursor(1, last)
            return True
        if self.remaining <= 0:
            self.page.next_cursor = _make_cursor(2, None)
            return True
        return False

    async def _present_types(self) -> list[str]:
        """The compartment types that hold anything this request may see, in `_id` order."""
        # Types placed by the definition's parameters and types that inherit their
        # targets' compartments (a message's Binary: access/compartments.py).
        placed = compartment_types(self.ctx.registry, self.ctx.store.inheritance)
        candidates = {
            t
            for t in placed
            if t != "Patient" and t in self.ctx.known_types and self.params.wants(t)
        }
        # Type level asks only which types exist (narrowed by the policy): with no other
        # condition MongoDB answers from the `(rt, _id)` index alone (DISTINCT_SCAN), where
        # `comp` non-empty would read every compartment's keys on every page.
        where: Doc = {"comp": self.patient} if self.patient is not None else {}
        if self.policy_filter is not None:
            where = all_of([where, self.policy_filter("*")])
        present = await self.ctx.store.limited(self.ctx.settings.query_max_time_ms).distinct(
            "rt", where, what="$everything"
        )
        return sorted(candidates & set(present))

    async def others(self, after: str | None) -> None:
        """Phase 2: type by type, in `_id` order, from just after `after`."""
        types = await self._present_types()
        after_type = after.split("/", 1)[0] if after else None
        for i, rt in enumerate(types):
            if after_type is not None and rt < after_type:
                continue
            p = self.params
            criteria = care_date_criteria(self.ctx.registry, rt, p.start, p.end)
            if p.since is not None:
                criteria += parse_search(
                    rt, [("_lastUpdated", f"ge{p.since}")], self.ctx.registry
                ).criteria
            found, last = await self._search(
                rt, criteria, after if rt == after_type else None, self._narrow(rt)
            )
            if found.next_cursor or (self.remaining <= 0 and i + 1 < len(types)):
                self.page.next_cursor = _make_cursor(2, last)
                return
            if self.remaining <= 0:
                return

    async def finish(self) -> None:
        """The post-check on every outgoing resource, then the page's includes: what its
        matches reference outside every compartment, of the asked types, once each, at most
        `MAX_INCLUDES`."""
        policy, indexer = self.req.policy, self.ctx.store.indexer
        page = self.page
        stored = page.stored_access
        page.resources = [
            r
            for r in page.resources
            if screen(
                policy,
                indexer,
                r,
                where="everything",
                stored=stored.get(f"{r.get('resourceType')}/{r.get('id')}"),
            )
        ]
        seen = {_ref(r) for r in page.resources}
        # A Patient is always in its own compartment: never an include.
        wanted = [
            ref
            for ref in includes.targets(self.ctx.registry, page.resources)
            if ref not in seen
            and not ref.startswith("Patient/")
            and self.params.wants(ref.split("/", 1)[0])
        ]
        found = await includes.fetch(
            self.ctx.store.limited(self.ctx.settings.query_max_time_ms),
            wanted,
            type_filter=self.policy_filter,
            limit=MAX_INCLUDES + 1,
        )
        if len(found) > MAX_INCLUDES:
            found = found[:MAX_INCLUDES]
            page.warnings.append(f"Included resources were capped at {MAX_INCLUDES}")
        page.included = [
            d["res"]
            for d in found
            if screen(policy, indexer, d["res"], where="everything-include", stored=d)
        ]


async def everything(
    ctx: ServerContext, req: FhirRequest, patient_id: str | None, params: EverythingParams
) -> FhirResponse:
    """`GET|POST Patient/[id]/$everything` (`patient_id` given) or `Patient/$everything`,
    once the operation table checked the method, the token's `search` on Patient and the
    parameters (fhir_server/operations/everything.py)."""
    patient = None
    if patient_id is not None:
        # A Patient the request may not see answers exactly as a missing one.
        await read_visible(ctx, req, "Patient", patient_id)
        patient = f"Patient/{patient_id}"
    phase, after = _read_cursor(params.cursor)
    pager = _Pager(ctx, req, params, patient)
    full = False
    if phase == 1 and params.wants("Patient"):
        full = await pager.patients(after)
    if not full:
        await pager.others(after if phase == 2 else None)
    await pager.finish()
    link_path = f"{patient}/$everything" if patient else "Patient/$everything"
    shown = SearchRequest(
        resource_type=None, used=params.used, dropped=params.dropped, cursor=params.cursor
    )
    body = searchset_bundle(pager.page, shown, ctx.base_url, link_path=link_path)
    return FhirResponse(status=200, body=body)
