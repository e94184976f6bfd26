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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo import DESCENDING
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, OperationFailure

from fhir_server.access.labels import normalised
from fhir_server.errors import Gone, NotFound, PreconditionFailed, ServiceUnavailable

Doc = dict[str, Any]
# Computes (index entries, patient compartments) for a resource at write time.
Indexer = Callable[[Doc], tuple[Doc, list[str]]]

# Contended writers retry with jittered backoff; past this many losses the client gets 503.
MAX_WRITE_ATTEMPTS = 40


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
        )


@dataclass(frozen=True)
class WriteResult:
    version: Version
    created: bool
    # False when an update carried the same content as the current version (no new version).
    changed: bool = True


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


class ResourceStore:
    """Create, read, update, delete and history of resources; no HTTP, no policy."""

    def __init__(self, db: AsyncDatabase[Doc], indexer: Indexer = no_index) -> None:
        self.db = db
        self.client = db.client
        self.resources = db.resources
        self.history = db.history
        self.indexer = indexer

    # -- reads ---------------------------------------------------------------------------

    async def current(
        self, rt: str, rid: str, *, session: AsyncClientSession | None = None
    ) -> Doc | None:
        return await self.resources.find_one({"_id": f"{rt}/{rid}"}, session=session)

    async def read(
        self,
        rt: str,
        rid: str,
        *,
        session: AsyncClientSession | None = None,
        visible: Doc | None = None,
    ) -> Version:
        """The current version; `visible` is the access policy's filter for this type.

        A resource the policy hides answers exactly as a missing one (404, never 410).
        """
        if visible:
            doc = await self.resources.find_one({"_id": f"{rt}/{rid}", **visible}, session=session)
            if doc is None:
                raise NotFound(f"{rt}/{rid} is not known")
            return Version.from_doc(doc)
        doc = await self.current(rt, rid, session=session)
        if doc is not None:
            return Version.from_doc(doc)
        last = await self._last_version(rt, rid, session)
        if last is not None and last.get("res") is None:
            raise Gone(f"{rt}/{rid} was deleted", headers={"ETag": f'W/"{last["vid"]}"'})
        raise NotFound(f"{rt}/{rid} is not known")

    async def vread(
        self, rt: str, rid: str, vid: str, *, session: AsyncClientSession | None = None
    ) -> Version:
        if not vid.isdigit():
            raise NotFound(f"{rt}/{rid} has no version {vid!r}")
        doc = await self.history.find_one({"_id": f"{rt}/{rid}/{int(vid)}"}, session=session)
        if doc is None:
            raise NotFound(f"{rt}/{rid} has no version {vid}")
        version = Version.from_doc(doc)
        if version.deleted:
            raise Gone(f"version {vid} of {rt}/{rid} is a delete")
        return version

    async def _last_version(
        self, rt: str, rid: str, session: AsyncClientSession | None
    ) -> Doc | None:
        return await self.history.find_one(
            {"rt": rt, "id": rid}, sort=[("vid", DESCENDING)], session=session
        )

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
            hist = {k: doc[k] for k in ("rt", "id", "vid", "lu", "comp", "sk", "res")}
            hist["_id"] = f"{rt}/{rid}/{vid}"
            hist["method"] = method

            async def op(
                s: AsyncClientSession, cur: Doc | None = cur, doc: Doc = doc, hist: Doc = hist
            ) -> None:
                await self.history.insert_one(hist, session=s)
                if cur is None:
                    await self.resources.insert_one(doc, session=s)
                    return
                r = await self.resources.replace_one(
                    {"_id": doc["_id"], "vid": cur["vid"]}, doc, session=s
                )
                if r.matched_count != 1:
                    raise _Retry

            try:
                await self._in_transaction(op, session)
            except (_Retry, DuplicateKeyError):
                if if_match is not None or session is not None or must_be_new:
                    raise PreconditionFailed(
                        f"{rt}/{rid} was changed by another request; read it and retry"
                    ) from None
                await _backoff()
                continue
            return WriteResult(Version.from_doc(hist), created=cur is None)
        raise ServiceUnavailable(f"{rt}/{rid} is under heavy concurrent change; retry")

    def document(self, rt: str, rid: str, vid: int, resource: Doc) -> Doc:
        """The stored shape of one version (`res`, `ix`, `comp`, `sk`...), for writers that
        insert in bulk outside `update` (the audit sink, benchmark loaders)."""
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
        }

    async def _in_transaction(
        self,
        op: Callable[[AsyncClientSession], Any],
        session: AsyncClientSession | None,
    ) -> None:
        """Run `op` in the caller's transaction, or in a transaction of its own."""
        if session is not None:
            await op(session)
            return
        async with self.client.start_session() as s:
            try:
                async with await s.start_transaction():
                    await op(s)
            except OperationFailure as exc:
                if isinstance(exc, DuplicateKeyError) or _is_write_conflict(exc):
                    raise _Retry from exc
                raise

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
        millisecond); type and system history by lastUpdated, then `_id`.
        """
        query: Doc = dict(visible or {})
        if rt is not None:
            query["rt"] = rt
        if since is not None:
            query["lu"] = {"$gte": since}
        if rid is not None:
            query["id"] = rid
            if before is not None:
                query["vid"] = {"$lt": before[2]}
            sort = [("vid", DESCENDING)]
        else:
            if before is not None:
                query["$or"] = [
                    {"lu": {"$lt": before[0]}},
                    {"lu": before[0], "_id": {"$lt": before[1]}},
                ]
            sort = [("lu", DESCENDING), ("_id", DESCENDING)]
        cursor = self.history.find(query, sort=sort, limit=count)
        return [d async for d in cursor]

    async def history_total(
        self,
        *,
        rt: str | None = None,
        rid: str | None = None,
        since: datetime | None = None,
        visible: Doc | None = None,
    ) -> int:
        query: Doc = dict(visible or {})
        if rt is not None:
            query["rt"] = rt
        if rid is not None:
            query["id"] = rid
        if since is not None:
            query["lu"] = {"$gte": since}
        return await self.history.count_documents(query)
