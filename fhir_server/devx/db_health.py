"""The database's reachability as this process last saw it, logged on each change only.

While the database is gone every request answers 503 (fhir_server/pipeline.py); a line
per request (or a traceback each) would bury the one fact an operator needs. So the first
failure after a success logs `{"event": "database", "state": "unreachable", ...}`, the
first success after failures logs `"state": "reachable"` with how long it was gone, and
nothing in between (docs/rest.md, "Request log").
"""

from __future__ import annotations

import logging
import threading
import time

from fhir_server.devx.json_log import DATABASE, line
from fhir_server.devx.json_log import logger as json_logger


class DatabaseHealth:
    def __init__(self, log: logging.Logger | None = None) -> None:
        self.log = log or json_logger(DATABASE)
        self._down_since: float | None = None
        self._failures = 0
        # The audit sink and the notifier report from other tasks and threads.
        self._lock = threading.Lock()

    @property
    def reachable(self) -> bool:
        return self._down_since is None

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            self._failures += 1
            if self._down_since is not None:
                return
            self._down_since = time.monotonic()
        self.log.warning(
            line({"event": "database", "state": "unreachable", "error": type(exc).__name__})
        )

    def succeeded(self) -> None:
        if self._down_since is None:  # the common case: no lock, no work
            return
        with self._lock:
            since, self._down_since = self._down_since, None
            failures, self._failures = self._failures, 0
        if since is None:
            return
        self.log.warning(
            line(
                {
                    "event": "database",
                    "state": "reachable",
                    "down_s": round(time.monotonic() - since, 3),
                    "failed_requests": failures,
                }
            )
        )
