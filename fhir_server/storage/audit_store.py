"""One resource type kept in an append-only collection of its own: the audit log.

Every request writes an AuditEvent, so the log grows with the traffic and would dominate the
`resources` collection: each event there cost a history version and 114-133 index entries
over the nine generic indexes (issue 11). `AuditStore` keeps the type in its own collection
(`audit`) instead, in the ordinary document shape (`_id` "AuditEvent/<id>", `rt`, `vid` 1,
`lu`, `res`, `comp`, `sk`, `ix`) so that the one search engine (fhir_server/search/) runs on it
unchanged, with:

- `ix` holding only the keys of the search parameters the log serves
  (profiles/access/audit_log.json), and only the indexes those parameters' types need
  (`index_models`): about 30 index entries an event, one insert, no history version;
- no versions: every event is version 1, written once by the server (`append`), never
  updated or deleted (`create`, `update`, `delete` refuse); vread of version 1, instance and
  type history answer from the collection itself;
- a filter's top-level `rt` equality on its own type dropped before it is sent: every
  document here is of that type, and SecantusDB would otherwise look that clause up first,
  which no index of this collection serves (docs/database.md).

`ResourceStore.for_type(rt)` hands this store to whoever reads or searches the type
(docs/storage.md, "The audit log").
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING, IndexModel, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, OperationFailure

from fhir_server.errors import MethodNotAllowed, NotFound
from fhir_server.search.extract import LOCAL_REF
from fhir_server.search.query import TOP
from fhir_server.search.values import instant as key_instant
from fhir_server.search.values import parse_instant, shift
from fhir_server.storage.limits import DEFAULT_MAX_TIME_MS
from fhir_server.storage.store import (
    Indexer,
    ResourceStore,
    Tombstone,
    Version,
    WriteResult,
    _conjunction,
    instant,
    now_utc,
)

Doc = dict[str, Any]
BATCH = 500  # documents moved per round by `adopt`


class AuditStore(ResourceStore):
    """Reads, searches and appends of one type in its own collection (module docstring)."""

    def __init__(
        self,
        db: AsyncDatabase[Doc],
        indexer: Indexer,
        *,
        resource_type: str,
        collection: str,
        searchable: frozenset[str],
        indexed: frozenset[str],
        indexes: list[IndexModel],
        refused_modifiers: frozenset[str] = frozenset(),
        comp_prefixes: tuple[str, ...] = (),
        max_time_ms: int = DEFAULT_MAX_TIME_MS,
    ) -> None:
        super().__init__(db, indexer, max_time_ms=max_time_ms)
        self.rt = resource_type
        self.collection_name = collection
        self.resources = db[collection]
        self.history = db[collection]  # the versions are the documents themselves
        # The search parameters served, and the fields (`k`, `lo`, `hi`, `lu`...) indexed:
        # a search needing any other is refused (search/execute.py), never run as a scan.
        self.searchable = searchable
        self.indexed = indexed
        self.indexes = indexes
        # Modifiers whose keys the indexer does not keep (`:missing`).
        self.refused_modifiers = refused_modifiers
        # The `ix.k` prefixes of the compartment parameters (`patient=Patient/`): their keys
        # are looked up in `comp`, which holds exactly them (`served_filter`).
        self.comp_prefixes = comp_prefixes

    def limited(self, max_time_ms: int) -> AuditStore:
        if max_time_ms == self.max_time_ms:
            return self
        return AuditStore(
            self.db,
            self.indexer,
            resource_type=self.rt,
            collection=self.collection_name,
            searchable=self.searchable,
            indexed=self.indexed,
            indexes=self.indexes,
            refused_modifiers=self.refused_modifiers,
            comp_prefixes=self.comp_prefixes,
            max_time_ms=max_time_ms,
        )

    async def ensure_indexes(self) -> None:
        """Create the log's indexes, drop those an older version created and this one does
        not (each costs every event an entry), and give events an older version wrote the
        looked-up keys `ix.q` (derived from their `ix.k`: no re-indexing)."""
        await self.resources.create_indexes(self.indexes)
        wanted = {"_id_", *(m.document["name"] for m in self.indexes)}
        async for ix in await self.resources.list_indexes():
            if ix["name"] not in wanted:
                with contextlib.suppress(OperationFailure):  # another process dropped it
                    await self.resources.drop_index(ix["name"])
        q = f"ix.{QUERY_KEYS}"
        batch: list[UpdateOne] = []
        async for d in self.resources.find({q: {"$exists": False}}, {"ix.k": 1}):
            keys = query_keys((d.get("ix") or {}).get("k") or [], self.comp_prefixes)
            batch.append(UpdateOne({"_id": d["_id"]}, {"$set": {q: keys}}))
            if len(batch) == BATCH:
                await self.resources.bulk_write(batch, ordered=False)
                batch = []
        if batch:
            await self.resources.bulk_write(batch, ordered=False)

    def _own(self, filt: Doc) -> Doc:
        if filt.get("rt") == self.rt:
            filt = {k: v for k, v in filt.items() if k != "rt"}
        return served_filter(filt, self.comp_prefixes)

    def unlooked_keys(self, filt: Doc) -> list[str]:
        """The keys a criterion's filter asks for that `ix.q` holds no entry for (a token's
        system alone, `type=system|`): such a search is refused, never run as a scan."""
        cond = filt.get("ix.k")
        if isinstance(cond, dict) and set(cond) & {"$in", "$all"}:
            cond = cond.get("$in", cond.get("$all"))
        keys = [cond] if isinstance(cond, str) else cond if isinstance(cond, list) else []
        return [
            k
            for k in keys
            if isinstance(k, str) and reduced_key(k) is None and covering_key(k) is None
        ]

    # -- queries -------------------------------------------------------------------------

    async def find(
        self,
        filt: Doc,
        projection: Doc | None = None,
        *,
        sort: list[tuple[str, int]] | None = None,
        limit: int = 0,
        session: AsyncClientSession | None = None,
        what: str = "The search",
    ) -> list[Doc]:
        return await super().find(
            self._own(filt), projection, sort=sort, limit=limit, session=session, what=what
        )

    async def count(self, filt: Doc, *, what: str = "Counting the results") -> int:
        return await super().count(self._own(filt), what=what)

    async def distinct(self, field: str, filt: Doc, *, what: str = "The query") -> list[Any]:
        return await super().distinct(field, self._own(filt), what=what)

    async def tombstone(
        self, rt: str, rid: str, *, session: AsyncClientSession | None = None
    ) -> Tombstone | None:
        return None  # nothing here is ever deleted

    async def vread(
        self, rt: str, rid: str, vid: str, *, session: AsyncClientSession | None = None
    ) -> Version:
        doc = await self.current(rt, rid, session=session) if vid == "1" else None
        if doc is None:
            raise NotFound(f"{rt}/{rid} has no version {vid}")
        return Version.from_doc({**doc, "method": "POST"})

    async def latest_versions(
        self, rt: str, rid: str, *, limit: int, projection: Doc | None = None
    ) -> list[Doc]:
        return await self.find({"_id": f"{rt}/{rid}"}, projection, limit=1)

    async def _history_find(
        self,
        filt: Doc,
        projection: Doc | None,
        *,
        sort: list[tuple[str, int]] | None = None,
        limit: int = 0,
        session: AsyncClientSession | None = None,
    ) -> list[Doc]:
        docs = await self._find(
            self.resources, self._own(filt), projection, sort, limit, session, "The history query"
        )
        return [{**d, "method": "POST"} for d in docs]  # every event was created once

    async def history_page(
        self,
        *,
        rt: str | None = None,
        rid: str | None = None,
        since: datetime | None = None,
        before: tuple[datetime, str, int] | None = None,
        count: int = 50,
        visible: Doc | None = None,
    ) -> list[Doc]:
        if rid is not None:
            if before is not None:
                return []  # one version only: there is no page after the first
            query = _conjunction([self._history_scope(rt, rid, since)], visible)
            return await self._history_find(query, None, limit=count)
        return await super().history_page(
            rt=rt, since=since, before=before, count=count, visible=visible
        )

    def _history_scope(  # type: ignore[override]
        self, rt: str | None, rid: str | None, since: datetime | None
    ) -> Doc:
        scope: Doc = {}
        if rid is not None:
            scope["_id"] = f"{rt or self.rt}/{rid}"
        if since is not None:
            scope["lu"] = {"$gte": since}
        return scope

    # -- writes: append only -------------------------------------------------------------

    def _refuse(self) -> MethodNotAllowed:
        return MethodNotAllowed(f"{self.rt} is written by the server only and never changed")

    async def create(self, rt: str, resource: Doc, **_: Any) -> WriteResult:
        raise self._refuse()

    async def update(self, rt: str, rid: str, resource: Doc, **_: Any) -> WriteResult:
        raise self._refuse()

    async def delete(self, rt: str, rid: str, **_: Any) -> Version | None:
        raise self._refuse()

    def document(self, rt: str, rid: str, vid: int, resource: Doc) -> Doc:
        """The stored shape (as `ResourceStore.document`) of an event the server built: it
        owns the dict and spelled its labels as the policy does, so no deep copy and no
        label normalising (they were half the cost of an audited request's event)."""
        lu = now_utc()
        meta = {**(resource.get("meta") or {}), "versionId": str(vid), "lastUpdated": instant(lu)}
        res = {**resource, "resourceType": rt, "id": rid, "meta": meta}
        ix, comp = self.indexer(res)
        return {
            "_id": f"{rt}/{rid}",
            "rt": rt,
            "id": rid,
            "vid": vid,
            "lu": lu,
            "res": res,
            "comp": comp,
            "sk": comp[0] if comp else f"{rt}/{rid}",
            "ix": ix,
        }

    async def append(self, resources: list[Doc]) -> None:
        """Insert new events (each with its `id` already set) in one `insert_many`."""
        await self.insert_versions([self.document(self.rt, r["id"], 1, r) for r in resources])

    async def insert_versions(self, docs: list[Doc]) -> None:
        """Insert documents of `document`'s shape, skipping any already written (a retried
        batch): no history version, which the events do not have."""
        try:
            await self.resources.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
                raise

    async def adopt(self, source: ResourceStore) -> int:
        """Move the events an older version stored in `source`'s `resources` (with their
        history versions) into this collection, indexed as this store indexes them, keeping
        their ids, contents and times. Idempotent: a move cut short is finished next time."""
        moved = 0
        while True:
            docs = await source.find(
                {"rt": self.rt}, {"res": 1, "lu": 1}, limit=BATCH, what="Moving the audit log"
            )
            if not docs:
                return moved
            batch = []
            for d in docs:
                ix, comp = self.indexer(d["res"])
                batch.append(
                    {
                        **{k: d[k] for k in ("_id", "res", "lu")},
                        "rt": self.rt,
                        "id": d["res"]["id"],
                        "vid": 1,
                        "comp": comp,
                        "sk": comp[0] if comp else d["_id"],
                        "ix": ix,
                    }
                )
            await self.insert_versions(batch)
            ids = [d["_id"] for d in docs]
            rids = [d["res"]["id"] for d in docs]
            await source.history.delete_many({"rt": self.rt, "id": {"$in": rids}})
            await source.resources.delete_many({"_id": {"$in": ids}})
            moved += len(docs)


# -- the looked-up keys ------------------------------------------------------------------
#
# Each index entry costs SecantusDB about 0.02 ms of CPU on insert, and an event's `ix.k`
# holds 20-25 keys: a token answers to `code`, `system|code` and `system|`, a reference to
# `Type/id` and `id`, a date to its year, month and day. The log keeps `ix.k` whole (it is
# what every query tests) but indexes `ix.q` instead: each key of `ix.k` reduced by
# `reduced_key`, the forms of one value folding into one entry (8-10 an event), and no
# entry for the compartment parameter's keys, which `comp` holds already. `served_filter`
# puts beside every `ix.k` clause of a query the clause it implies on `ix.q` (or `comp`):
# a document has key `k` only if it has `reduced_key(k)`, so the added clause changes no
# answer; it only gives the database an index to look the candidates up in, and the `ix.k`
# clause then picks the exact matches among them (docs/storage.md, "The audit log").

QUERY_KEYS = "q"  # `ix.q`


def covering_key(key: str) -> tuple[str, str] | None:
    """(code, year/month/day) of a date's covering key (`date:2026-12-02`, search/extract.py),
    the one kind of key without `=`."""
    if "=" in key:
        return None
    code, colon, when = key.partition(":")
    return (code, when) if colon else None


def reduced_key(key: str) -> str | None:
    """The `ix.q` entry that stands for the `ix.k` key `key`; None for a token's system
    alone (`type=system|`: every value of it, no one entry) and for a date's covering key
    (looked up as a range of `ix.lo` instead: `served_filter`)."""
    name, eq, value = key.partition("=")
    if not eq:
        return None
    if "|" in value:
        value = value.partition("|")[2]  # `system|code`, `|code` -> `code`
        if not value:
            return None
    m = LOCAL_REF.match(value)
    return f"{name}={m.group(2) if m else value}"


def query_keys(keys: list[str], comp_prefixes: tuple[str, ...]) -> list[str]:
    """`ix.q` of a document whose `ix.k` is `keys`."""
    skip = comp_params(comp_prefixes)
    return sorted({r for k in keys if not k.startswith(skip) if (r := reduced_key(k))})


def comp_params(comp_prefixes: tuple[str, ...]) -> tuple[str, ...]:
    """`patient=Patient/` -> `patient=`: every key of a compartment parameter, whose
    `Patient/` keys `comp` holds (so `ix.q` holds none of them)."""
    return tuple(p.split("=", 1)[0] + "=" for p in comp_prefixes)


def _looked_up(cond: Any, comp_prefixes: tuple[str, ...]) -> tuple[str, Any] | None:
    """The clause on `ix.q` or `comp` that an `ix.k` condition implies, if any."""
    if isinstance(cond, str):
        keys, many = [cond], False
    elif isinstance(cond, dict) and set(cond) == {"$in"} and isinstance(cond["$in"], list):
        keys, many = cond["$in"], True
    elif isinstance(cond, dict) and set(cond) == {"$all"} and isinstance(cond["$all"], list):
        keys, many = cond["$all"][:1], False  # every key is required: one implies enough
    else:
        return None  # `$nin`, `$ne`, ranges: no equality to look up
    if not keys or not all(isinstance(k, str) for k in keys):
        return None
    cover = covering_key(keys[0]) if len(keys) == 1 else None
    if cover is not None:
        # The date's start lies in that year, month or day (extract.covering_keys).
        start = f"{cover[0]}|{cover[1]}"
        return "ix.lo", {"$gte": start, "$lt": start + TOP}
    if all(k.startswith(comp_prefixes) for k in keys):
        field, found = "comp", [k.partition("=")[2] for k in keys]
    else:
        field, reduced = f"ix.{QUERY_KEYS}", [reduced_key(k) for k in keys]
        if any(k.startswith(comp_params(comp_prefixes)) for k in keys) or None in reduced:
            return None  # a compartment parameter's other keys are in neither
        found = [r for r in reduced if r is not None]
    found = list(dict.fromkeys(found))
    return field, ({"$in": found} if many and len(found) > 1 else found[0])


# How far a date's end may lie past its start: an event's `recorded` is an instant (to the
# millisecond when the server writes it, at worst to the second), so its `ix.hi` is at most
# a second past its `ix.lo`. The log indexes `ix.lo` only.
DATE_WIDTH = timedelta(seconds=1)


def _start_bounds(cond: Any) -> tuple[str, Any] | None:
    """The `ix.lo` range a range on `ix.hi` implies (lo <= hi <= lo + DATE_WIDTH)."""
    if not isinstance(cond, dict) or not cond or not set(cond) <= set(_RANGE_OPS):
        return None
    out: Doc = {}
    for op, bound in cond.items():
        if not isinstance(bound, str):
            return None
        if op in ("$lt", "$lte"):
            out[op] = bound  # lo <= hi
            continue
        code, _, when = bound.partition("|")
        try:
            earlier = key_instant(shift(parse_instant(when), -DATE_WIDTH))
        except ValueError:
            earlier = ""  # not an instant (a bare prefix): the code's whole range
        out["$gte"] = f"{code}|{earlier}"
    return "ix.lo", out


_RANGE_OPS = ("$gt", "$gte", "$lt", "$lte")
LOOKUP_ORDER = ("_id", "comp", f"ix.{QUERY_KEYS}")  # the most selective first (SecantusDB)


def served_filter(filt: Doc, comp_prefixes: tuple[str, ...]) -> Doc:
    """`filt` with the `ix.q`/`comp` clause each `ix.k` clause implies, at every level,
    the point clauses first (SecantusDB looks up the first clause an index answers:
    docs/database.md); a date range's `$elemMatch` as a plain range, since an event has one
    `date` (`recorded`, 1..1) and so one `ix.lo` and one `ix.hi` value."""
    out: Doc = {}
    for field, cond in filt.items():
        if field in ("$and", "$or", "$nor") and isinstance(cond, list):
            out[field] = [served_filter(c, comp_prefixes) for c in cond]
            continue
        if field in ("ix.lo", "ix.hi") and isinstance(cond, dict) and set(cond) == {"$elemMatch"}:
            cond = cond["$elemMatch"]
        out[field] = cond
        implied = None
        if field == "ix.k":
            implied = _looked_up(cond, comp_prefixes)
        elif field == "ix.hi":
            implied = _start_bounds(cond)
        if implied is not None and implied[0] not in filt:
            out[implied[0]] = implied[1]
    first = [f for f in LOOKUP_ORDER if f in out]
    return {**{f: out[f] for f in first}, **out}


def index_models(fields: list[str], compartment_sort: str | None) -> list[IndexModel]:
    """The indexes of a separate collection whose `ix` fields in use are `fields` (`k`, `s`,
    `lo`, `hi`; `lu` for `_lastUpdated`), each suffixed by `_id` like the `resources` ones
    (search/indexes.py), `k` looked up through its reduced keys `ix.q` (above), plus
    `(comp, ix.o.<compartment_sort>, _id)` for a patient's events newest first when the
    type is in the patient compartment."""
    a = ASCENDING

    def looked_up(f: str) -> str:
        return "lu" if f == "lu" else f"ix.{QUERY_KEYS if f == 'k' else f}"

    # `ix.hi` ranges are looked up as the `ix.lo` ranges they imply (`_start_bounds`).
    indexed = [f for f in fields if not (f == "hi" and "lo" in fields)]
    models = [
        IndexModel([(looked_up(f), a), ("_id", a)], name=f"{QUERY_KEYS if f == 'k' else f}_id")
        for f in indexed
    ]
    if compartment_sort is not None:
        key = [("comp", a), (f"ix.o.{compartment_sort}", a), ("_id", a)]
        models.append(IndexModel(key, name=f"comp_{compartment_sort}"))
    return models


async def prepare_separate(store: ResourceStore) -> int:
    """Create the indexes of every type kept apart and move in what an older version stored
    of it in `resources` (start-up and every CLI command: docs/storage.md, "The audit log").
    Returns the number of documents moved."""
    moved = 0
    for apart in store.separate.values():
        if isinstance(apart, AuditStore):
            await apart.ensure_indexes()
            moved += await apart.adopt(store)
    return moved
