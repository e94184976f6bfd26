"""The order in which pytest-xdist hands out test files (tests/scheduling.py)."""

from __future__ import annotations

from pathlib import Path

from tests.scheduling import DURATIONS, file_costs, longest_first


def test_longest_known_file_first_unknown_ones_by_their_number_of_tests() -> None:
    units = {
        "many_fast.py": dict.fromkeys(range(100), False),
        "few_slow.py": dict.fromkeys(range(2), False),
        "unknown_big.py": dict.fromkeys(range(30), False),
        "unknown_small.py": dict.fromkeys(range(3), False),
    }
    costs = {"many_fast.py": 5.0, "few_slow.py": 300.0}
    assert longest_first(units, costs) == [
        "few_slow.py",
        "unknown_big.py",
        "many_fast.py",
        "unknown_small.py",
    ]


def test_the_committed_table_names_existing_files(tmp_path: Path) -> None:
    root = DURATIONS.parents[1]
    costs = file_costs()
    assert costs, "tests/durations.json is missing or empty"
    assert all(t >= 0 for t in costs.values())
    # A file renamed or removed only loses its place in the order; most must still exist.
    present = [f for f in costs if (root / f).exists()]
    assert len(present) >= 0.8 * len(costs)
    assert file_costs(tmp_path / "none.json") == {}
