"""The query time limit, and what exceeding it answers.

Every query the store sends carries `maxTimeMS` (settings `QUERY_MAX_TIME_MS`); a query
that runs past it answers 503 too-costly rather than holding a connection.
One helper serves searches, `$export` batches and reads alike. A lost database is left to
the request handler (app.py), which answers 503 with Retry-After for every path alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pymongo.errors import ExecutionTimeout, OperationFailure

from fhir_server.errors import TooCostly

# MongoDB's error code for MaxTimeMSExpired, raised as a plain OperationFailure by some
# commands (count, distinct) and by SecantusDB.
MAX_TIME_EXPIRED = 50
DEFAULT_MAX_TIME_MS = 5000


@contextmanager
def time_limited(what: str) -> Iterator[None]:
    """Translate a query that ran past its time limit into TooCostly (503 too-costly)."""
    try:
        yield
    except ExecutionTimeout as e:
        raise TooCostly(f"{what} ran past its time budget; narrow it") from e
    except OperationFailure as e:
        if e.code == MAX_TIME_EXPIRED:
            raise TooCostly(f"{what} ran past its time budget; narrow it") from e
        raise
