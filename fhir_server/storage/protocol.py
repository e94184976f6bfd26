"""The `Store` protocol: the one interface to stored resources (DESIGN.md, "Shape of the
code, next"). `ResourceStore` (store.py) implements it on MongoDB; it is the only code that
touches the collections, combines filters with `$and` (never by dict merge) and puts the
query time limit on every query. docs/storage.md, "The Store", lists the contract.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pymongo.asynchronous.client_session import AsyncClientSession

    from fhir_server.storage.store import Indexer, ResourceStore, Tombstone, Version, WriteResult

Doc = dict[str, Any]


class Store(Protocol):
    indexer: Indexer
    max_time_ms: int

    # The store that holds type `rt`: this one, or the separate one of a type kept in a
    # collection of its own (the audit log: storage/audit_store.py).
    def for_type(self, rt: str | None) -> ResourceStore: ...

    # Current resources: a read is a search on `_id` under the caller's filter.
    async def find(
        self,
        filt: Doc,
        projection: Doc | None = None,
        *,
        sort: list[tuple[str, int]] | None = None,
        limit: int = 0,
        session: AsyncClientSession | None = None,
        what: str = ...,
    ) -> list[Doc]: ...
    async def resources_matching(self, filt: Doc, *, what: str = ...) -> list[Doc]: ...
    async def count(self, filt: Doc, *, what: str = ...) -> int: ...
    async def distinct(self, field: str, filt: Doc, *, what: str = ...) -> list[Any]: ...
    async def find_visible(
        self,
        rt: str,
        rid: str,
        visible: Doc | None,
        *,
        session: AsyncClientSession | None = None,
        fields: Doc | None = ...,
    ) -> Doc | None: ...
    async def read(
        self,
        rt: str,
        rid: str,
        *,
        session: AsyncClientSession | None = None,
        visible: Doc | None = None,
    ) -> Version: ...
    async def tombstone(
        self, rt: str, rid: str, *, session: AsyncClientSession | None = None
    ) -> Tombstone | None: ...

    # Versions.
    async def vread(
        self, rt: str, rid: str, vid: str, *, session: AsyncClientSession | None = None
    ) -> Version: ...
    async def latest_versions(
        self, rt: str, rid: str, *, limit: int, projection: Doc | None = None
    ) -> list[Doc]: ...
    async def history_page(
        self,
        *,
        rt: str | None = None,
        rid: str | None = None,
        since: datetime | None = None,
        before: tuple[datetime, str, int] | None = None,
        count: int = 50,
        visible: Doc | None = None,
    ) -> list[Doc]: ...
    async def history_total(
        self,
        *,
        rt: str | None = None,
        rid: str | None = None,
        since: datetime | None = None,
        visible: Doc | None = None,
    ) -> int: ...

    # Writes (versioned, in transactions).
    async def create(
        self,
        rt: str,
        resource: Doc,
        *,
        rid: str | None = None,
        session: AsyncClientSession | None = None,
    ) -> WriteResult: ...
    async def update(
        self,
        rt: str,
        rid: str,
        resource: Doc,
        *,
        if_match: int | None = None,
        method: str = "PUT",
        session: AsyncClientSession | None = None,
    ) -> WriteResult: ...
    async def delete(
        self,
        rt: str,
        rid: str,
        *,
        if_match: int | None = None,
        session: AsyncClientSession | None = None,
    ) -> Version | None: ...
    def deferred_writes(self, session: AsyncClientSession) -> AbstractAsyncContextManager[None]: ...
    def document(self, rt: str, rid: str, vid: int, resource: Doc) -> Doc: ...
    async def insert_versions(self, docs: list[Doc]) -> None: ...
