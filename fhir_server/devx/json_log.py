"""JSON log lines on stderr: one object a line, for people and log shippers alike.

The request log and the database state changes write here (docs/rest.md, "Request log").
Their loggers do not propagate, so the line is exactly the JSON object (no level prefix
from the root handler); tests add their own handler to the logger to read the lines.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

REQUESTS = "fhir_server.requests"
DATABASE = "fhir_server.database"


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is at the time (test runners swap it)."""

    json_lines = True

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


def logger(name: str) -> logging.Logger:
    """`name`'s logger with its one stderr handler (added once per process)."""
    log = logging.getLogger(name)
    if not any(getattr(h, "json_lines", False) for h in log.handlers):
        log.addHandler(_Stderr())
        log.setLevel(logging.INFO)
        log.propagate = False
    return log


def line(fields: dict[str, Any]) -> str:
    """One JSON object, `ts` (UTC, ISO 8601 with milliseconds) first."""
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
    return orjson.dumps({"ts": stamp, **fields}).decode()
