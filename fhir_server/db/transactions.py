"""A request's own database transaction, for writes whose side effects must commit with
them (portal/hooks.py `write_session`, rest/idempotency.py `transaction`).

Inside a transaction bundle the bundle's session is used and nothing is opened. Otherwise
one session and transaction are opened, set on the request for the writes to use, and a
commit that loses to a concurrent writer (WriteConflict 112 or a TransientTransactionError)
raises what the caller's `conflict` builds: each caller answers a lost race its own way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import OperationFailure

WRITE_CONFLICT = 112


class HasSession(Protocol):
    session: AsyncClientSession | None


def is_conflict(exc: OperationFailure) -> bool:
    return exc.code == WRITE_CONFLICT or exc.has_error_label("TransientTransactionError")


@asynccontextmanager
async def own_transaction(
    client: Any, req: HasSession, conflict: Callable[[], Exception]
) -> AsyncIterator[AsyncClientSession]:
    """The request's session: the bundle's, or a transaction opened for it here."""
    if req.session is not None:
        yield req.session
        return
    async with client.start_session() as s:
        try:
            async with await s.start_transaction():
                req.session = s
                try:
                    yield s
                finally:
                    req.session = None
        except OperationFailure as exc:
            if is_conflict(exc):
                raise conflict() from None
            raise
