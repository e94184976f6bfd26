"""The database's state as requests see it, logged once per change (issue 16, item 5).

During an outage every request fails the same way; a line (or a traceback) per request
buries the one fact an operator needs. So the first failure logs "database unavailable",
the first success after it "database available again" with how long and how many requests
were refused, and nothing in between.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("fhir_server.db")


class DatabaseHealth:
    def __init__(self) -> None:
        self.down_since: float | None = None
        self.refused = 0

    def failed(self, exc: BaseException) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            self.refused = 1
            log.warning(
                "database unavailable (%s); answering 503 until it is back", type(exc).__name__
            )
        else:
            self.refused += 1

    def ok(self) -> None:
        if self.down_since is None:  # the common case: one attribute read
            return
        seconds = time.monotonic() - self.down_since
        log.warning(
            "database available again after %.1f s; %d requests answered 503 meanwhile",
            seconds,
            self.refused,
        )
        self.down_since = None
        self.refused = 0
