"""`Settings.from_env`: the per-query time limit read from QUERY_MAX_TIME_MS."""

from __future__ import annotations

import pytest

from fhir_server.config import Settings


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, 5000), ("", 5000), ("250", 250), (" 12000 ", 12000), ("10", 10), ("600000", 600000)],
)
def test_query_max_time_ms(monkeypatch: pytest.MonkeyPatch, raw: str | None, expected: int) -> None:
    if raw is None:
        monkeypatch.delenv("QUERY_MAX_TIME_MS", raising=False)
    else:
        monkeypatch.setenv("QUERY_MAX_TIME_MS", raw)
    assert Settings.from_env().query_max_time_ms == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("abc", "must be an integer"),
        ("5s", "must be an integer"),
        ("1.5", "must be an integer"),
        ("0", "between 10 and 600000"),
        ("-5", "between 10 and 600000"),
        ("9", "between 10 and 600000"),
        ("600001", "between 10 and 600000"),
    ],
)
def test_query_max_time_ms_refused(monkeypatch: pytest.MonkeyPatch, raw: str, message: str) -> None:
    monkeypatch.setenv("QUERY_MAX_TIME_MS", raw)
    with pytest.raises(ValueError, match=message):
        Settings.from_env()


def test_cors_origins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORS_ORIGINS", " https://a.example.org, http://127.0.0.1:3000/ ,")
    assert Settings.from_env().cors_origins == ("https://a.example.org", "http://127.0.0.1:3000")
    monkeypatch.setenv("CORS_ORIGINS", "https://a.example.org/app")
    with pytest.raises(ValueError, match="CORS_ORIGINS"):
        Settings.from_env()


def test_load_and_stop_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MAX_IN_FLIGHT", "AUDIT_MAX_PENDING", "DB_SOCKET_TIMEOUT_MS", "STOP_TIMEOUT_S"):
        monkeypatch.delenv(name, raising=False)
    s = Settings.from_env()
    assert (s.max_in_flight, s.audit_max_pending, s.stop_timeout_s) == (64, 10_000, 30)
    assert s.socket_timeout_ms == 30_000
    monkeypatch.setenv("QUERY_MAX_TIME_MS", "60000")
    assert Settings.from_env().socket_timeout_ms == 65_000  # never cuts a query short
    monkeypatch.setenv("MAX_IN_FLIGHT", "8")
    monkeypatch.setenv("STOP_TIMEOUT_S", "6")
    s = Settings.from_env()
    assert (s.max_in_flight, s.stop_timeout_s) == (8, 6)
    monkeypatch.setenv("MAX_IN_FLIGHT", "0")
    with pytest.raises(ValueError, match="MAX_IN_FLIGHT must be between 1"):
        Settings.from_env()


def test_uvicorn_access_log_is_replaced_by_the_json_request_log(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """uvicorn's line is never on; ACCESS_LOG governs the app's JSON request log."""
    from fhir_server.cli import uvicorn_config

    monkeypatch.delenv("ACCESS_LOG", raising=False)
    assert uvicorn_config(Settings.from_env(), object()).access_log is False
    assert Settings.from_env().access_log is True
    monkeypatch.setenv("ACCESS_LOG", "0")
    assert Settings.from_env().access_log is False
