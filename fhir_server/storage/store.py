"""Versioned resource storage on MongoDB.

Current versions live in `resources`, every version (deletes included) in the append-only
`history` collection; docs/storage.md gives the document shapes. Every write is a
multi-document transaction whose conditions make concurrent writers safe: the history
version's `_id` ("Type/id/vid") is unique, and the current document is replaced only if it
still holds the version the writer read. So two updates from version n cannot both
succeed, and no version number is ever written twice.

See https://hl7.org/fhir/R4/http.html#versioning and #concurrency.
"""

from __future__ import annotations

import asyncio
import copy
import random
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo import DESCENDING, InsertOne, ReplaceOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure

from fhir_server.access.compartments import CompartmentInheritance
from fhir_server.access.labels import normalised
from fhir_server.access.policy_epochs import POLICY_TYPES, bump, written_keys
from fhir_server.access.stored_keys import LABEL_PARAM, access_field, key_param
from fhir_server.db.dialect import uses_elem_match
from fhir_server.db.retry import ATTEMPTS, dropped_before_commit, note_retry
from fhir_server.errors import Gone, NotFound, PreconditionFailed, ServiceUnavailable
from fhir_server.search import secantus_plan
from fhir_server.storage.limits import DEFAULT_MAX_TIME_MS, time_limited

if TYPE_CHECKING:
    from fhir_server.storage.protocol import Store

Doc = dict[str, Any]
# Computes (index entries, patient compartments) for a resource at write time.
Indexer = Callable[[Doc], tuple[Doc, list[str]]]

# Contended writers retry with jittered backoff; past this many losses the client gets 503.
MAX_WRITE_ATTEMPTS = 40
# What a read returns of a current document: the resource, its version, the compartments
# and access keys the post-check tests; never the index arrays `ix` (docs/storage.md,
# "Lean reads"), and the workflow state kept beside the resource (`WORKFLOW_FIELD`).
READ_FIELDS: Doc = {"rt": 1, "id": 1, "vid": 1, "lu": 1, "res": 1, "comp": 1, "ak": 1, "wf": 1}
# Workflow state a portal workflow keeps beside `res` (a prescription's refills used:
# portal/prescriptions/), written only by `set_workflow_field` in the workflow's own
# transaction, carried over by every new version, never part of the resource or its history.
WORKFLOW_FIELD = "wf"
# Documents left as their BSON bytes (`find_batches`).
RAW: CodecOptions[RawBSONDocument] = CodecOptions(document_class=RawBSONDocument)
# Fields a history version copies from the current document it was written with.
VERSION_FIELDS = ("rt", "id", "vid", "lu", "comp", "sk", "res", "ak")


def no_index(resource: Doc) -> tuple[Doc, list[str]]:
    return {}, []


def now_utc() -> datetime:
    """Now, truncated to the millisecond that BSON dates keep."""
    t = datetime.now(UTC)
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


def instant(t: datetime) -> str:
    """A FHIR instant with millisecond precision, e.g. 2026-11-22T03:18:33.123Z."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class Version:
    """One stored version of a resource; `resource` is None for a delete."""

    rt: str
    id: str
    vid: int
    lu: datetime
    resource: Doc | None
    method: str = "PUT"
    # The stored patient compartments (inherited ones included: access/compartments.py).
    comp: tuple[str, ...] = ()
    # The stored access keys (`ak`, access/stored_keys.py); None for a version without.
    access: Doc | None = None

    @property
    def etag(self) -> str:
        return f'W/"{self.vid}"'

    @property
    def deleted(self) -> bool:
        return self.resource is None

    @staticmethod
    def from_doc(doc: Doc) -> Version:
        return Version(
            rt=doc["rt"],
            id=doc["id"],
            vid=int(doc["vid"]),
            lu=doc["lu"],
            resource=doc.get("res"),
            method=doc.get("method", "PUT"),
            comp=tuple(doc.get("comp") or ()),
            access=doc.get("ak"),
        )

    @property
    def stored(self) -> Doc:
        """The stored facts the post-check tests (screen.py): `comp` and `ak`."""
        return {"comp": list(self.comp), "ak": self.access}


@dataclass(frozen=True)
class WriteResult:
    version: Version
    created: bool
    # False when an update carried the same content as the current version (no new version).
    changed: bool = True
    # The current version the write replaced (None for a create): what the audit names.
    previous: Version | None = None


class _Retry(Exception):
    """Another writer got there first; re-read and try again."""


async def _backoff() -> None:
    # Jitter spreads writers that lost the same race so they do not collide again.
    await asyncio.sleep(random.uniform(0.001, 0.02))


def _is_write_conflict(exc: OperationFailure) -> bool:
    return exc.code == 112 or exc.has_error_label("TransientTransactionError")


def _same_content(a: Doc, b: Doc) -> bool:
    def strip(r: Doc) -> Doc:
        r = dict(r)
        meta = dict(r.get("meta") or {})
        meta.pop("versionId", None)
        meta.pop("lastUpdated", None)
        if meta:
            r["meta"] = meta
        else:
            r.pop("meta", None)
        return r

    return strip(a) == strip(b)


@dataclass(frozen=True)
class Tombstone:
    """The delete version of a resource, with the compartments and search keys the resource
    had when it was deleted: what an access policy tests to tell 410 from 404."""

    version: Version
    compartments: tuple[str, ...]
    keys: tuple[str, ...]


def visible_query(key: str, visible: Doc | None) -> Doc:
    """`_id` equality ANDed with the policy's filter, never merged into one dict: a policy
    (or a query-qualified scope) naming `_id` itself must narrow the read, not replace its
    id. The equality stays the first top-level clause, which SecantusDB looks up first."""
    if not visible:
        return {"_id": key}
    return {"_id": key, "$and": [visible]}


@dataclass
class _Deferred:
    """The writes a transaction has made but not yet sent: history versions and the current
    documents' inserts or conditional replaces, sent in bulk (`ResourceStore.deferred_writes`)."""

    history: list[Doc] = field(default_factory=list)
    current: list[InsertOne[Doc] | ReplaceOne[Doc]] = field(default_factory=list)
    replaces: int = 0
    # The current documents written, by `_id`: what inheriting compartments reads first.
    docs: dict[str, Doc] = field(default_factory=dict)
    # The policy epochs the writes bump when they are sent (access/policy_epochs.py).
    epochs: set[str] = field(default_factory=set)


class ResourceStore:
    """Create, read, update, delete, search queries and history of resources; no HTTP, no
    policy. The only code that touches the `resources` and `history` collections; every
    query carries the time limit `max_time_ms` (docs/storage.md, "The Store")."""

    def __init__(
        self,
        db: AsyncDatabase[Doc],
        indexer: Indexer = no_index,
        *,
        max_time_ms: int = DEFAULT_MAX_TIME_MS,
        inheritance: CompartmentInheritance | None = None,
    ) -> None:
        self.db = db
        self.client = db.client
        self.resources = db.resources
        self.history = db.history
        self.indexer = indexer
        self.max_time_ms = max_time_ms
        # Types that also sit in their targets' compartments (access/compartments.py).
        self.inheritance = inheritance
        # Writes deferred per session (by id), shared with the `limited` copies.
        self._deferred: dict[int, _Deferred] = {}
        # Types kept in a collection of their own, by type (the audit log:
        # storage/audit_store.py); `for_type` picks the store of a type.
        self.separate: dict[str, ResourceStore] = {}

    def for_type(self, rt: str | None) -> ResourceStore:
        """The store that holds resources of type `rt`: this one, or a separate one."""
        return self.separate.get(rt, self) if rt else self

    def limited(self, max_time_ms: int) -> ResourceStore:
        """The same store with another query time limit (a caller's own budget)."""
        if max_time_ms == self.max_time_ms:
            return self
        store = ResourceStore(
            self.db, self.indexer, max_time_ms=max_time_ms, inheritance=self.inheritance
        )
        store._deferred = self._deferred
        store.separate = {rt: s.limited(max_time_ms) for rt, s in self.separate.items()}
        return store

    # -- queries on current resources ----------------------------------------------------

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
        """Current documents matching `filt` (a filter the caller built with `$and`)."""
        return await self._find(self.resources, filt, projection, sort, limit, session, what)

    async def _find(
        self,
        collection: Any,
        filt: Doc,
        projection: Doc | None,
        sort: list[tuple[str, int]] | None,
        limit: int,
        session: AsyncClientSession | None,
        what: str,
        *,
        flush: bool = True,
    ) -> list[Doc]:
        """One time-limited query on `collection`, every document of its answer. In a
        session with deferred writes they are sent first, so a transaction reads its own."""
        if flush and session is not None:
            await self._flush(session)
        with time_limited(what):
            cursor = collection.find(
                filt,
                projection,
                sort=sort,
                limit=limit,
                session=session,
                max_time_ms=self.max_time_ms,
            )
            return [d async for d in cursor]

    async def find_batches(
        self,
        filt: Doc,
        projection: Doc | None,
        *,
        sort: list[tuple[str, int]] | None = None,
        limit: int = 0,
        batch: int,
        what: str = "The query",
    ) -> AsyncGenerator[list[RawBSONDocument]]:
        """The current documents matching `filt`, `batch` at a time from one cursor, as the
        bytes the database sent (`bson.decode` each when it is used): the caller holds one
        batch of bytes and one decoded document, never the whole answer nor a batch of
        decoded ones, which take several times their size (`$export`). The time limit is
        the query's: MongoDB counts it over all of its cursor's batches."""
        raw = self.resources.with_options(codec_options=RAW)
        cursor = raw.find(
            filt,
            projection,
            sort=sort,
            limit=limit,
            batch_size=batch,
            max_time_ms=self.max_time_ms,
        )
        try:
            while True:
                with time_limited(what):
                    docs = await cursor.to_list(batch)
                if not docs:
                    return
                yield docs
        finally:
            await cursor.close()

    async def resources_matching(self, filt: Doc, *, what: str = "The access policy") -> list[Doc]:
        """The FHIR resources (`res`) of the current documents matching `filt`."""
        return [d["res"] for d in await self.find(filt, {"res": 1}, what=what) if d.get("res")]

    async def count(self, filt: Doc, *, what: str = "Counting the results") -> int:
        with time_limited(what):
            return int(await self.resources.count_documents(filt, maxTimeMS=self.max_time_ms))

    async def distinct(self, field: str, filt: Doc, *, what: str = "The query") -> list[Any]:
        with time_limited(what):
            return list(await self.resources.distinct(field, filt, maxTimeMS=self.max_time_ms))

    async def is_empty(self) -> bool:
        return not await self.find({}, {"_id": 1}, limit=1)

    async def current(
        self, rt: str, rid: str, *, session: AsyncClientSession | None = None
    ) -> Doc | None:
        """The whole current document (index entries included), for writers."""
        return await self.find_visible(rt, rid, None, session=session, fields=None)

    async def find_visible(
        self,
        rt: str,
        rid: str,
        visible: Doc | None,
        *,
        session: AsyncClientSession | None = None,
        fields: Doc | None = READ_FIELDS,
    ) -> Doc | None:
        """The current document of `rt/rid` if the filter `visible` (the policy's, for
        this type) lets it through: a read is a search on `_id` under the policy. Only
        `fields` come back (the whole document for None)."""
        key = f"{rt}/{rid}"
        check = secantus_plan.recheck(visible) if visible else None
        if check is None or await uses_elem_match(self.db):
            docs = await self.find(
                visible_query(key, visible), fields, limit=1, session=session, what="The read"
            )
            return docs[0] if docs else None
        # SecantusDB scans the collection for `{_id, $and: [policy]}` (docs/database.md,
        # "Reads under a policy"): the document by `_id` alone, the policy's filter tested
        # on it in memory, exactly as the database would.
        test, needed = check
        shown = set(fields or ()) | {"_id"}
        added = [f for f in needed if f.split(".", 1)[0] not in shown]
        proj = None if fields is None else {**fields, **dict.fromkeys(added, 1)}
        docs = await self.find({"_id": key}, proj, limit=1, session=session, what="The read")
        if not docs or not test(docs[0]):
            return None
        doc = docs[0]
        if fields is not None:
            for f in added:  # only what was asked for leaves (`ix.k` alone was fetched)
                doc.pop(f.split(".", 1)[0], None)
        return doc

    async def read(
        self,
        rt: str,
        rid: str,
        *,
        session: AsyncClientSession | None = None,
        visible: Doc | None = None,
    ) -> Version:
        """The current version; `visible` is the access policy's filter for this type.

        A resource the policy hides answers exactly as a missing one (404, never 410); with
        no filter a deleted resource answers 410 (https://hl7.org/fhir/R4/http.html#read).
        Callers under a policy that tell 410 from 404 use `tombstone`.
        """
        doc = await self.find_visible(rt, rid, visible, session=session)
        if doc is not None:
            return Version.from_doc(doc)
        if not visible:
            tomb = await self.tombstone(rt, rid, session=session)
            if tomb is not None:
                raise Gone(f"{rt}/{rid} was deleted", headers={"ETag": tomb.version.etag})
        raise NotFound(f"{rt}/{rid} is not known")

    async def tombstone(
        self, rt: str, rid: str, *, session: AsyncClientSession | None = None
    ) -> Tombstone | None:
        """The delete version when the resource's last version is a delete, else None."""
        last = await self._last_version(rt, rid, session)
        if last is None or last.get("res") is not None:
            return None
        keys = (last.get("ix") or {}).get("k")
        comps = last.get("comp") or []
        if keys is None:
            # Written before tombstones kept their keys: index the version it deleted.
            before = await self._history_one(f"{rt}/{rid}/{int(last['vid']) - 1}", session)
            res = (before or {}).get("res")
            ix, comps = self.indexer(res) if isinstance(res, dict) else ({}, comps)
            keys = ix.get("k", [])
        return Tombstone(Version.from_doc(last), tuple(comps), tuple(keys))

    # -- queries on history --------------------------------------------------------------

    async def vread(
        self, rt: str, rid: str, vid: str, *, session: AsyncClientSession | None = None
    ) -> Version:
        if not vid.isdigit():
            raise NotFound(f"{rt}/{rid} has no version {vid!r}")
        doc = await self._history_one(f"{rt}/{rid}/{int(vid)}", session)
        if doc is None:
            raise NotFound(f"{rt}/{rid} has no version {vid}")
        version = Version.from_doc(doc)
        if version.deleted:
            raise Gone(f"version {vid} of {rt}/{rid} is a delete")
        return version

    async def latest_versions(
        self, rt: str, rid: str, *, limit: int, projection: Doc | None = None
    ) -> list[Doc]:
        """The last `limit` versions of one resource, newest first."""
        return await self._history_find(
            {"rt": rt, "id": rid}, projection, sort=[("vid", DESCENDING)], limit=limit
        )

    async def _history_one(self, key: str, session: AsyncClientSession | None) -> Doc | None:
        docs = await self._history_find({"_id": key}, None, limit=1, session=session)
        return docs[0] if docs else None

    async def _history_find(
        self,
        filt: Doc,
        projection: Doc | None,
        *,
        sort: list[tuple[str, int]] | None = None,
        limit: int = 0,
        session: AsyncClientSession | None = None,
    ) -> list[Doc]:
        return await self._find(
            self.history, filt, projection, sort, limit, session, "The history query"
        )

    async def _last_version(
        self, rt: str, rid: str, session: AsyncClientSession | None
    ) -> Doc | None:
        docs = await self._history_find(
            {"rt": rt, "id": rid}, None, sort=[("vid", DESCENDING)], limit=1, session=session
        )
        return docs[0] if docs else None

    # -- writes --------------------------------------------------------------------------

    async def create(
        self,
        rt: str,
        resource: Doc,
        *,
        rid: str | None = None,
        session: AsyncClientSession | None = None,
    ) -> WriteResult:
        """Create with a server-assigned id (`rid` lets a transaction pre-assign one)."""
        rid = rid or new_id()
        return await self._write(
            rt, rid, resource, if_match=None, method="POST", session=session, must_be_new=True
        )

    async def update(
        self,
        rt: str,
        rid: str,
        resource: Doc,
        *,
        if_match: int | None = None,
        method: str = "PUT",
        session: AsyncClientSession | None = None,
    ) -> WriteResult:
        """Update, or create with the client's id when the resource does not exist."""
        return await self._write(
            rt, rid, resource, if_match=if_match, method=method, session=session
        )

    async def delete(
        self,
        rt: str,
        rid: str,
        *,
        if_match: int | None = None,
        session: AsyncClientSession | None = None,
    ) -> Version | None:
        """Delete; returns the tombstone version, or None when there was nothing to delete."""
        for _ in range(MAX_WRITE_ATTEMPTS):
            cur = await self.current(rt, rid, session=session)
            if cur is None:
                if if_match is not None:
                    raise PreconditionFailed(f"{rt}/{rid} is not at version {if_match}")
                return None
            if if_match is not None and cur["vid"] != if_match:
                raise PreconditionFailed(f"{rt}/{rid} is at version {cur['vid']}, not {if_match}")
            vid = cur["vid"] + 1
            lu = now_utc()
            hist = {
                "_id": f"{rt}/{rid}/{vid}",
                "rt": rt,
                "id": rid,
                "vid": vid,
                "lu": lu,
                "comp": cur.get("comp", []),
                "sk": cur.get("sk"),
                # The deleted version's search keys: a policy tells 410 from 404 by them.
                "ix": {"k": (cur.get("ix") or {}).get("k", [])},
                "method": "DELETE",
                "res": None,
            }

            async def op(s: AsyncClientSession, cur: Doc = cur, hist: Doc = hist) -> None:
                await self.history.insert_one(hist, session=s)
                r = await self.resources.delete_one(
                    {"_id": cur["_id"], "vid": cur["vid"]}, session=s
                )
                if r.deleted_count != 1:
                    raise _Retry
                await bump(self.db, written_keys(rt, cur.get("comp")), s)

            try:
                await self._in_transaction(op, session)
            except _Retry:
                if if_match is not None or session is not None:
                    raise PreconditionFailed(f"{rt}/{rid} changed concurrently") from None
                await _backoff()
                continue
            return Version.from_doc(hist)
        raise ServiceUnavailable(f"{rt}/{rid} is under heavy concurrent change; retry")

    async def _write(
        self,
        rt: str,
        rid: str,
        resource: Doc,
        *,
        if_match: int | None,
        method: str,
        session: AsyncClientSession | None,
        must_be_new: bool = False,
    ) -> WriteResult:
        for _ in range(MAX_WRITE_ATTEMPTS):
            cur = None if must_be_new else await self.current(rt, rid, session=session)
            if if_match is not None and (cur is None or cur["vid"] != if_match):
                have = "does not exist" if cur is None else f"is at version {cur['vid']}"
                raise PreconditionFailed(f"{rt}/{rid} {have}, not version {if_match}")
            if cur is not None and _same_content(cur["res"], resource):
                return WriteResult(Version.from_doc(cur), created=False, changed=False)
            if cur is not None:
                vid = cur["vid"] + 1
            elif must_be_new:
                vid = 1
            else:
                last = await self._last_version(rt, rid, session)
                vid = (last["vid"] + 1) if last else 1
            doc = self.document(rt, rid, vid, resource)
            if cur is not None and WORKFLOW_FIELD in cur:
                doc[WORKFLOW_FIELD] = cur[WORKFLOW_FIELD]
            await self.inherit_compartments(doc, session=session)
            hist = {k: doc[k] for k in VERSION_FIELDS}
            hist["_id"] = f"{rt}/{rid}/{vid}"
            hist["method"] = method
            held = self._deferred.get(id(session)) if session is not None else None
            if held is not None:
                self._defer(held, doc, hist, cur)
                return WriteResult(Version.from_doc(hist), created=cur is None)

            async def op(
                s: AsyncClientSession, cur: Doc | None = cur, doc: Doc = doc, hist: Doc = hist
            ) -> None:
                await self.history.insert_one(hist, session=s)
                if cur is None:
                    await self.resources.insert_one(doc, session=s)
                else:
                    r = await self.resources.replace_one(
                        {"_id": doc["_id"], "vid": cur["vid"]}, doc, session=s
                    )
                    if r.matched_count != 1:
                        raise _Retry
                # In the write's transaction: the policy caches see it with the write.
                await bump(self.db, written_keys(rt, cur and cur.get("comp"), doc["comp"]), s)

            try:
                await self._in_transaction(op, session)
            except (_Retry, DuplicateKeyError):
                if if_match is not None or session is not None or must_be_new:
                    raise PreconditionFailed(
                        f"{rt}/{rid} was changed by another request; read it and retry"
                    ) from None
                await _backoff()
                continue
            previous = Version.from_doc(cur) if cur is not None else None
            return WriteResult(Version.from_doc(hist), created=cur is None, previous=previous)
        raise ServiceUnavailable(f"{rt}/{rid} is under heavy concurrent change; retry")

    @staticmethod
    def _defer(held: _Deferred, doc: Doc, hist: Doc, cur: Doc | None) -> None:
        """Hold one version for the bulk send, with the same conditions `_write` puts in
        its own writes: a new document is an insert (it fails if the `_id` exists), an
        update replaces only the version it read."""
        if cur is None and doc["_id"] in held.docs:
            raise PreconditionFailed(f"{doc['_id']} is created twice in one transaction")
        held.history.append(hist)
        held.epochs.update(written_keys(doc["rt"], cur and cur.get("comp"), doc["comp"]))
        if cur is None:
            held.current.append(InsertOne(doc))
        else:
            held.current.append(ReplaceOne({"_id": doc["_id"], "vid": cur["vid"]}, doc))
            held.replaces += 1
        held.docs[doc["_id"]] = doc

    @asynccontextmanager
    async def deferred_writes(self, session: AsyncClientSession) -> AsyncIterator[None]:
        """Within the caller's transaction on `session`: hold creates and updates and send
        them in a few bulk writes (one `insert_many` of history versions, one `bulk_write`
        of current documents) when the block ends or before the session's next query, so
        the transaction still reads its own writes (docs/storage.md, "Transactions in
        bulk"). Every condition stays in the write: an insert fails on an existing `_id`,
        a replace matches only `{_id, vid: <read>}`; a failed one fails the transaction."""
        key = id(session)
        if key in self._deferred:
            raise RuntimeError("writes are already deferred on this session")
        self._deferred[key] = _Deferred()
        try:
            yield
            await self._flush(session)
        finally:
            self._deferred.pop(key, None)

    async def _flush(self, session: AsyncClientSession) -> None:
        held = self._deferred.get(id(session))
        if held is None or not held.history:
            return
        self._deferred[id(session)] = _Deferred()
        try:
            await self.history.insert_many(held.history, session=session)
            r = await self.resources.bulk_write(held.current, session=session)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if errors and all(e.get("code") == 11000 for e in errors):
                key = (errors[0].get("keyValue") or {}).get("_id", "a resource")
                raise PreconditionFailed(
                    f"{key} already exists or was written by another request; nothing was changed"
                ) from None
            raise
        if r.matched_count != held.replaces:
            raise PreconditionFailed(
                "a resource of the transaction was changed by another request; "
                "nothing was changed, read it and retry"
            )
        await bump(self.db, held.epochs, session)

    def document(self, rt: str, rid: str, vid: int, resource: Doc) -> Doc:
        """The stored shape of one version (`res`, `ix`, `comp`, `sk`...), for writers that
        insert in bulk outside `update` (benchmark loaders; the audit log has its own)."""
        lu = now_utc()
        res = copy.deepcopy(normalised(resource))
        res["resourceType"] = rt
        res["id"] = rid
        meta = dict(res.get("meta") or {})
        meta["versionId"] = str(vid)
        meta["lastUpdated"] = instant(lu)
        # Keep meta first-ish for readability; field order is not significant in FHIR JSON.
        res["meta"] = meta
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
            "ak": access_field(ix.get("k", ()), rt, res),
        }

    async def compartments_of(
        self, rt: str, resource: Doc, *, session: AsyncClientSession | None = None
    ) -> tuple[Doc, list[str]]:
        """(index entries, patient compartments) of `resource` as a write would store them:
        the indexer's, widened by the inherited ones (a Binary in its message's), so the
        write checks judge the compartments the stored document will have."""
        ix, comp = self.indexer(resource)
        if self.inheritance is None or rt not in self.inheritance.types:
            return ix, comp
        doc: Doc = {
            "_id": f"{rt}/{resource.get('id')}",
            "rt": rt,
            "res": resource,
            "comp": comp,
            "ix": ix,
        }
        await self.inherit_compartments(doc, session=session)
        return doc["ix"], list(doc["comp"])

    async def inherit_compartments(
        self, doc: Doc, *, session: AsyncClientSession | None = None
    ) -> None:
        """Widen `doc`'s `comp` (and `sk`) with the compartments its inheritance sources
        have as stored, read in the writer's session so a transaction sees its own earlier
        writes (docs/storage.md, "Inherited compartments"). A type that also inherits
        labels (a message's attachment) gets its sources' sensitive-label keys in `ix.k`
        and `ak`, so it is hidden exactly where they are."""
        if self.inheritance is None or doc["rt"] not in self.inheritance.types:
            return
        keys = self.inheritance.sources(doc["res"])
        if not keys:
            return
        # Sources this transaction wrote but has not sent are read from what it holds; no
        # other write can be pending for the rest, so the database has them as they are.
        held = self._deferred.get(id(session)) if session is not None else None
        found = [held.docs[k] for k in keys if k in held.docs] if held else []
        rest = [k for k in keys if not held or k not in held.docs]
        if rest:
            found += await self._find(
                self.resources,
                {"_id": {"$in": rest}},
                {"comp": 1, "ak": 1},
                None,
                0,
                session,
                "The compartment lookup",
                flush=False,
            )
        comp = list(doc["comp"])
        for src in sorted(found, key=lambda d: str(d["_id"])):
            comp += [c for c in src.get("comp") or [] if c not in comp]
        doc["comp"] = comp
        doc["sk"] = comp[0] if comp else doc["_id"]
        if doc["rt"] in self.inheritance.label_types and isinstance(doc.get("ix"), dict):
            inherited = {
                str(k)
                for src in found
                for k in (src.get("ak") or {}).get("k") or []
                if key_param(str(k)) == LABEL_PARAM
            }
            if inherited:
                keys = sorted({*doc["ix"].get("k", []), *inherited})
                doc["ix"] = {**doc["ix"], "k": keys}
                doc["ak"] = access_field(keys, doc["rt"], doc["res"])

    async def _in_transaction(
        self,
        op: Callable[[AsyncClientSession], Any],
        session: AsyncClientSession | None,
    ) -> None:
        """Run `op` in the caller's transaction, or in a transaction of its own, run once
        more when its pooled connection had been dropped before it committed (db/retry.py;
        the caller's transaction is the caller's to retry)."""
        if session is not None:
            await op(session)
            return
        for attempt in range(ATTEMPTS):
            async with self.client.start_session() as s:
                try:
                    async with await s.start_transaction():
                        await op(s)
                    return
                except OperationFailure as exc:
                    if isinstance(exc, DuplicateKeyError) or _is_write_conflict(exc):
                        raise _Retry from exc
                    raise
                except Exception as exc:
                    if attempt + 1 == ATTEMPTS or not dropped_before_commit(exc):
                        raise
                    note_retry("a write", exc)

    # -- history -------------------------------------------------------------------------

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
        """Versions newest first; `before` is the keyset cursor (lu, _id, vid) of the last page.

        An instance's history is ordered by version number (several versions can share a
        millisecond); type and system history by lastUpdated, then `_id`. `visible` (the
        policy on versions) is ANDed in, never merged.
        """
        parts: list[Doc] = [self._history_scope(rt, rid, since)]
        if rid is not None:
            if before is not None:
                parts.append({"vid": {"$lt": before[2]}})
            sort = [("vid", DESCENDING)]
        else:
            if before is not None:
                parts.append(
                    {
                        "$or": [
                            {"lu": {"$lt": before[0]}},
                            {"lu": before[0], "_id": {"$lt": before[1]}},
                        ]
                    }
                )
            sort = [("lu", DESCENDING), ("_id", DESCENDING)]
        return await self._history_find(_conjunction(parts, visible), None, sort=sort, limit=count)

    async def history_total(
        self,
        *,
        rt: str | None = None,
        rid: str | None = None,
        since: datetime | None = None,
        visible: Doc | None = None,
    ) -> int:
        query = _conjunction([self._history_scope(rt, rid, since)], visible)
        with time_limited("Counting the history"):
            return int(await self.history.count_documents(query, maxTimeMS=self.max_time_ms))

    @staticmethod
    def _history_scope(rt: str | None, rid: str | None, since: datetime | None) -> Doc:
        scope: Doc = {}
        if rt is not None:
            scope["rt"] = rt
        if rid is not None:
            scope["id"] = rid
        if since is not None:
            scope["lu"] = {"$gte": since}
        return scope

    async def hold_versions(
        self,
        rt: str,
        rid: str,
        vid: int,
        until: datetime | None,
        forever: datetime,
        session: AsyncClientSession | None,
    ) -> None:
        """Give every stored version (1 to `vid`) of `rt/rid` whose own status releases it
        the current version's hold (`until`, None: none), so a held result's earlier
        versions stay out of vread and history exactly as long as it does
        (access/release.py). Versions whose own status is hidden (`forever`) keep that.
        The versions are named by `_id`: point lookups on both databases."""
        if session is not None:
            await self._flush(session)  # the transaction's held writes first
        keys = [f"{rt}/{rid}/{v}" for v in range(1, vid + 1)]
        filt: Doc = {"_id": {"$in": keys}, "ak": {"$exists": True}, "ak.r": {"$ne": forever}}
        update: Doc = {"$set": {"ak.r": until}} if until is not None else {"$unset": {"ak.r": ""}}
        await self.history.update_many(filt, update, session=session)

    async def carry_release(
        self, rt: str, ids: list[str], until: datetime | None, session: AsyncClientSession | None
    ) -> None:
        """Set (or clear) the release instant `ak.r` of every stored version of the `rt`
        resources `ids`: a result's attachments are hidden as long as the result."""
        if not ids:
            return
        if session is not None:
            await self._flush(session)
        update: Doc = {"$set": {"ak.r": until}} if until is not None else {"$unset": {"ak.r": ""}}
        keys = [f"{rt}/{i}" for i in ids]
        found = await self._find(
            self.resources, {"_id": {"$in": keys}}, {"vid": 1}, None, 0, session, "The release"
        )
        versions = [f"{d['_id']}/{v}" for d in found for v in range(1, int(d["vid"]) + 1)]
        await self.resources.update_many({"_id": {"$in": keys}}, update, session=session)
        if versions:
            await self.history.update_many({"_id": {"$in": versions}}, update, session=session)

    # -- bulk maintenance ----------------------------------------------------------------

    async def insert_versions(self, docs: list[Doc]) -> None:
        """Insert new resources (version 1, from `document`) and their history entries in
        bulk, skipping any already written (a retried batch): benchmark and test loaders."""
        hist = []
        for d in docs:
            h = {k: d[k] for k in VERSION_FIELDS if k in d}
            h["_id"] = f"{d['_id']}/{d['vid']}"
            h["method"] = "POST"
            hist.append(h)
        # History first: a current version never exists without its history entry.
        for col, batch in ((self.history, hist), (self.resources, docs)):
            try:
                await col.insert_many(batch, ordered=False)
            except BulkWriteError as exc:
                if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
                    raise
        # No transaction here (loaders): the epochs after the documents.
        await bump(self.db, [k for d in docs for k in written_keys(d["rt"], d.get("comp"))], None)

    async def set_index_entries(
        self, key: str, vid: int, ix: Doc, comp: list[str], resource: Doc | None = None
    ) -> bool:
        """Replace the index entries (and the access keys drawn from them and from the
        `resource`, a result's release instant) of one current document if it is still at
        `vid`."""
        sk = comp[0] if comp else key
        rt = key.split("/", 1)[0]
        ak = access_field(ix.get("k", ()), rt, resource)
        old = (
            await self.resources.find_one({"_id": key}, {"comp": 1}) if rt in POLICY_TYPES else None
        )
        r = await self.resources.update_one(
            {"_id": key, "vid": vid}, {"$set": {"ix": ix, "comp": comp, "sk": sk, "ak": ak}}
        )
        if r.matched_count == 1:
            await bump(self.db, written_keys(rt, (old or {}).get("comp"), comp), None)
        return r.matched_count == 1

    async def set_workflow_field(
        self,
        rt: str,
        rid: str,
        name: str,
        expected: Any,
        value: Any,
        *,
        session: AsyncClientSession | None,
    ) -> bool:
        """Set `wf.<name>` of the current `rt/rid` to `value` only while it still holds
        `expected` (None: not set yet), in `session`: a conditional write, so of two
        writers that read the same state one wins and the other gets False."""
        field = f"{WORKFLOW_FIELD}.{name}"
        # A missing field matches null, so `None` stands for "never set".
        cond: Doc = (
            {field: {"$in": [expected, None]}} if expected in (None, 0) else {field: expected}
        )
        r = await self.resources.update_one(
            {"$and": [{"_id": f"{rt}/{rid}"}, cond]}, {"$set": {field: value}}, session=session
        )
        return r.matched_count == 1


def _conjunction(parts: list[Doc], visible: Doc | None) -> Doc:
    """`parts` (disjoint fields) with `visible` ANDed in by `$and`, never by dict merge."""
    query: Doc = {}
    for p in parts:
        query.update(p)
    if visible:
        query["$and"] = [visible]
    return query


def as_store(source: ResourceStore | AsyncDatabase[Doc], max_time_ms: int | None) -> ResourceStore:
    """`source` as a store with the time limit `max_time_ms` (None: the store's own, or the
    default for a bare database, as tests and benchmarks pass one)."""
    if isinstance(source, ResourceStore):
        return source if max_time_ms is None else source.limited(max_time_ms)
    return ResourceStore(source, max_time_ms=max_time_ms or DEFAULT_MAX_TIME_MS)


if TYPE_CHECKING:

    def _implements(store: ResourceStore) -> Store:
        return store  # mypy checks that ResourceStore satisfies the Store protocol
