"""The rules' clock can be fixed for a test and returns to the wall clock after."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fhir_server import clock


def test_fixed_sets_now_within_the_block_only() -> None:
    at = datetime(2026, 3, 1, 8, 30, 0, 123456, tzinfo=UTC)
    with clock.fixed(at):
        assert clock.now() == at.replace(microsecond=123000)
    assert abs(clock.now() - datetime.now(UTC)) < timedelta(seconds=5)


def test_a_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError), clock.fixed(datetime(2026, 3, 1)):
        pass
