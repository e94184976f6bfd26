"""When a transaction may be run again: a pooled connection the database had dropped.

A database closes connections that stay idle (SecantusDB after 5 minutes, a firewall or a
load balancer after its own time) or that it chooses to end (`killOp`, a restart). The
driver finds out only when it next sends on one. Outside a transaction it retries reads and
writes once itself (`retryReads`, `retryWrites`: db/client.py); inside one it does not, so
the first transaction after an idle spell answered 503 "connection is already closed"
(issue 11). The driver labels such an error `TransientTransactionError` when the
transaction had not reached its commit (MongoDB Drivers' transactions specification,
"Retrying transactions"): nothing of it was written, so running it once more is safe. A
commit whose outcome is unknown (`UnknownTransactionCommitResult`) is never run again, nor
are a server that cannot be selected or a socket timeout (the database is down or hung:
retrying only doubles the wait before the 503). docs/storage.md, "Dropped connections".
"""

from __future__ import annotations

import logging

from pymongo.errors import AutoReconnect, NetworkTimeout, ServerSelectionTimeoutError

log = logging.getLogger("fhir_server.db")

# Runs of a transaction whose connection was dropped before its commit: the first and one
# more (a second dropped connection in a row is an outage, answered 503).
ATTEMPTS = 2


def dropped_before_commit(exc: BaseException) -> bool:
    """The transaction lost its connection before committing (safe to run again)."""
    return (
        isinstance(exc, AutoReconnect)
        and not isinstance(exc, (NetworkTimeout, ServerSelectionTimeoutError))
        and exc.has_error_label("TransientTransactionError")
        and not exc.has_error_label("UnknownTransactionCommitResult")
    )


def note_retry(what: str, exc: BaseException) -> None:
    log.warning(
        "%s lost its database connection before committing; running it again: %s", what, exc
    )
