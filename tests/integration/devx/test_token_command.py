"""`fhir-server token` (issue 16, developer experience item 1): a token from the real
authorization server, which reads the login's record over HTTP and nothing beyond its scopes."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI

from fhir_server import cli
from fhir_server.devx.token import TokenRefused, issue, seed_password
from smart_auth.config import SEED_DIR
from tests.integration.seeded import seeded_server

LOGINS = SEED_DIR / "logins.json"


@pytest.fixture(scope="module")
async def served(mongo_uri: str) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    async with seeded_server(mongo_uri) as pair:
        yield pair


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}


async def _issue(app: FastAPI, username: str, scope: str, patient: str | None = None) -> Any:
    password = seed_password(username, LOGINS)
    assert password is not None
    return await anyio.to_thread.run_sync(
        issue, app.state.smart_auth, username, password, scope, patient
    )


async def test_the_command_prints_a_token_that_reads_the_record_and_no_further(
    served: tuple[FastAPI, httpx.AsyncClient],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, http = served
    settings = app.state.ctx.settings
    monkeypatch.setenv("MONGODB_URI", settings.mongodb_uri)
    monkeypatch.setenv("MONGODB_DATABASE", settings.database)
    monkeypatch.setenv("AUTO_SEED", "0")
    monkeypatch.delenv("FHIR_ENV", raising=False)
    argv = ["token", "--login", "james.carter", "--scope", "patient/*.rs"]
    rc = await anyio.to_thread.run_sync(cli.main, argv)
    out = capsys.readouterr()
    assert rc == 0, out.err
    token = out.out.strip()
    assert token.count(".") == 2  # a JWT, alone on stdout
    assert "patient: sponsor-james-carter" in out.err
    with caplog.at_level(logging.INFO, logger="fhir_server.requests"):
        own = await http.get("/fhir/Patient/sponsor-james-carter", headers=bearer(token))
    # The request log names the verified token's client, and the route, not the id.
    line = json.loads(caplog.records[-1].getMessage())
    assert line["client_id"] == "mhs-portal-public-app"
    assert line["route"] == "/fhir/Patient/{id}"
    assert own.status_code == 200, own.text
    assert own.json()["id"] == "sponsor-james-carter"
    # Beyond the scopes: another adult's record, and any write (.rs only).
    other = await http.get("/fhir/Patient/dependent-emma-carter", headers=bearer(token))
    assert other.status_code in (403, 404)
    write = await http.post(
        "/fhir/Observation",
        headers={**bearer(token), "Content-Type": "application/fhir+json"},
        json={"resourceType": "Observation", "status": "final", "code": {"text": "x"}},
    )
    assert write.status_code == 403, write.text
    # The login was recorded as a browser login is (auth_events -> the login AuditEvent).
    events = app.state.smart_auth.store.db["auth_events"]
    row = await anyio.to_thread.run_sync(
        lambda: events.find_one({"username": "james.carter", "user_agent": "fhir-server token"})
    )
    assert row is not None and row["outcome"] == "success"


async def test_the_login_level_caps_the_scopes_as_in_the_browser(
    served: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, http = served
    issued = await _issue(app, "robert.alvarez", "patient/*.rs")
    assert "patient/Observation.rs" not in issued.response["scope"].split()
    assert "patient/*.rs" in issued.withheld
    token = issued.response["access_token"]
    ok = await http.get("/fhir/Patient/retiree-robert-alvarez", headers=bearer(token))
    assert ok.status_code == 200
    labs = await http.get("/fhir/Observation", headers=bearer(token))
    assert labs.status_code == 403


async def test_a_patient_the_login_may_not_open_is_refused(
    served: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, _ = served
    with pytest.raises(TokenRefused, match="may not open patient"):
        await _issue(app, "james.carter", "patient/*.rs", patient="dependent-emma-carter")
    child = await _issue(app, "james.carter", "patient/*.rs", patient="child-liam-carter")
    assert child.response["patient"] == "child-liam-carter"


async def test_a_wrong_password_is_refused_by_the_login_step(
    served: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, _ = served
    with pytest.raises(TokenRefused, match="incorrect"):
        await anyio.to_thread.run_sync(
            issue, app.state.smart_auth, "maria.carter", "not-her-password", "patient/*.rs"
        )


def test_production_refuses_the_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FHIR_ENV", "production")
    monkeypatch.setenv("MONGODB_URI", "mongodb://127.0.0.1:1")
    rc = cli.main(["token", "--login", "james.carter"])
    assert rc == 2
    assert "refused in production" in capsys.readouterr().err


async def test_a_parents_token_for_an_adolescent_sees_only_what_the_policy_allows(
    served: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    """The command grants what the browser would, and the policy still governs: a sponsor's
    token opened on his 15-year-old reads her Patient record but none of her results."""
    app, http = served
    issued = await _issue(app, "james.carter", "patient/*.rs", patient="adolescent-sophia-carter")
    token = issued.response["access_token"]
    own = await http.get("/fhir/Patient/adolescent-sophia-carter", headers=bearer(token))
    assert own.status_code == 200
    labs = await http.get(
        "/fhir/Observation", params={"patient": "adolescent-sophia-carter"}, headers=bearer(token)
    )
    assert labs.status_code == 403 or not labs.json().get("entry"), labs.text
    notes = await http.get("/fhir/DocumentReference", headers=bearer(token))
    assert notes.status_code == 403 or not notes.json().get("entry"), notes.text
