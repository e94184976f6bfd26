"""Spreading test files over the pytest-xdist workers so that the run ends early.

`--dist loadfile` keeps a file on one worker (its module-scoped seeded server is built once),
hands out files in order of their number of tests, and gives a worker its next file while
two of its tests are still to run. A long file with few tests then starts late, or waits
behind a file the same worker already holds while the other worker is idle: the run ends
when the last long file does. This scheduler hands out the longest files first (the
greedy longest-processing-time rule), by the per-file times of a recent run
(tests/durations.json, written by `pytest --write-durations`), and gives a worker its next
file only when it is on the last test of the current one. A file the table does not know
costs a default per test; a stale table only makes the order less good, never a test
wrong (docs/testing.md).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from xdist.scheduler import LoadFileScheduling

DURATIONS = Path(__file__).with_name("durations.json")
# Seconds per test of a file the table does not know: about the suite's mean.
UNKNOWN_PER_TEST_S = 0.5


def file_costs(path: Path = DURATIONS) -> dict[str, float]:
    """Per-file seconds from the table; none when it is missing (order by test count)."""
    if not path.exists():
        return {}
    table: dict[str, float] = json.loads(path.read_text())["files"]
    return table


def longest_first(units: dict[str, Any], costs: dict[str, float]) -> list[str]:
    """The files (work units: file -> its tests) in descending order of expected seconds."""
    return sorted(units, key=lambda f: -costs.get(f, UNKNOWN_PER_TEST_S * len(units[f])))


class LongestFileFirst(LoadFileScheduling):
    def __init__(self, config: pytest.Config, log: Any = None) -> None:
        super().__init__(config, log)
        self.costs = file_costs()
        self.ordered = False

    def _assign_work_unit(self, node: Any) -> None:
        if not self.ordered:
            units = {f: self.workqueue[f] for f in longest_first(self.workqueue, self.costs)}
            self.workqueue.clear()
            self.workqueue.update(units)
            self.ordered = True
        super()._assign_work_unit(node)

    def _reschedule(self, node: Any) -> None:
        # A worker runs a test only once it holds the next one (it must know whether to
        # tear down module fixtures), so "one test left" is the moment to hand it more.
        pending = self._pending_of(self.assigned_work.get(node, {}))
        if not node.shutting_down and self.workqueue and pending > 1:
            return
        super()._reschedule(node)


class DurationRecorder:
    """Sums setup + call + teardown per file and writes the table at the end of the run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.files: dict[str, float] = defaultdict(float)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.files[report.nodeid.split("::", 1)[0]] += report.duration

    def pytest_sessionfinish(self) -> None:
        files = {f: round(t, 1) for f, t in sorted(self.files.items())}
        text = json.dumps({"files": files, "total_s": round(sum(files.values()))}, indent=1)
        self.path.write_text(text + "\n")
