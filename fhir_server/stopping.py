"""Stopping on SIGTERM within a bounded time, whatever the database does.

uvicorn's graceful stop waits, by default without limit, for every request in flight and
then for the lifespan's shutdown; a request (or the audit flush) waiting on a database that
no longer answers would keep the process alive for ever. So the stop has three bounds, all
derived from `STOP_TIMEOUT_S` (docs/rest.md, "Stopping"):

1. requests in flight get a third of it to finish; uvicorn then cancels them;
2. the lifespan's shutdown (the exports, the audit flush, closing the client) shares the
   next third, and stopping the embedded database has the last (fhir_server/app.py);
3. a watchdog thread, armed by the first SIGTERM or SIGINT, ends the process with exit code
   70 when the whole stop has not finished in `STOP_TIMEOUT_S`, first killing the embedded
   database child if this process started it. It runs in its own thread, so it fires even
   if the event loop is blocked.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from types import FrameType

import uvicorn

log = logging.getLogger("fhir_server")

# EX_SOFTWARE (sysexits.h): the stop did not finish cleanly in time.
FORCED_EXIT = 70


def graceful_timeout(stop_timeout_s: int) -> int:
    """The part of the stop budget that requests in flight may use."""
    return max(1, stop_timeout_s // 3)


class BoundedStopServer(uvicorn.Server):
    """uvicorn's server whose stop is bounded by a watchdog (see the module docstring)."""

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        stop_timeout_s: int,
        last_resort: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(config)
        self.stop_timeout_s = stop_timeout_s
        self.last_resort = last_resort
        self._watchdog: threading.Timer | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._watchdog is None:
            self._watchdog = threading.Timer(self.stop_timeout_s, self._force)
            self._watchdog.daemon = True
            self._watchdog.start()
        super().handle_exit(sig, frame)

    def _force(self) -> None:
        log.error("the stop took over %d s; exiting now", self.stop_timeout_s)
        try:
            self.last_resort()
        finally:
            logging.shutdown()
            os._exit(FORCED_EXIT)
