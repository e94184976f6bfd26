"""DEERS-style account linking in headless Chromium, on the whole server (FHIR server and
authorization server, the seed population): an unlinked DS Logon account is asked to
verify its identity after signing in; wrong answers show one "record not found, check
DEERS" page whatever differed and count toward the lockout; the right ones link the
account, whose token then names its Patient (`fhirUser`)."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import uvicorn

from fhir_server.db.embedded import free_port
from seed_data.common import Clock
from seed_data.identities import UNLINKED_EDIPI, UNLINKED_ID, ssn_of
from smart_auth import accounts
from tests.conftest import drop_test_database, make_settings
from tests.e2e.auth.test_browser_login import authorize_url, open_browser
from tests.integration.auth.conftest import PUBLIC, pkce
from tests.integration.seeded import restore_seed

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[3]
UNLINKED = json.loads((ROOT / "seed_data/logins.json").read_text())["unlinked"][0]
# The declared answers (seed_data/identities.py): the birth date relative to today.
BIRTH = Clock(date.today()).birth_date(51, 40)
LAST4 = ssn_of(UNLINKED_EDIPI)[-4:]
SCOPE = "openid fhirUser user/*.rs"
LOCKED_USER = "deers.lockout"
LOCKED_PASSWORD = "Dev-Only-Lockout-1!"


@dataclass
class Live:
    base: str
    app: Any


@pytest.fixture(scope="module")
async def live(mongo_uri: str) -> AsyncIterator[Live]:
    from fhir_server.app import create_app

    port = free_port()
    settings = make_settings(mongo_uri, auth_required=True, port=port)
    await restore_seed(mongo_uri, settings.database)
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        await anyio.sleep(0.05)
    yield Live(f"http://127.0.0.1:{port}", app)
    server.should_exit = True
    await anyio.to_thread.run_sync(thread.join, 10)
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_uri)
    await drop_test_database(client, settings.database)
    await client.close()


async def _sign_in(page: Any, live: Live, catcher: Any, username: str, password: str) -> str:
    verifier, challenge = pkce()
    await page.goto(authorize_url(live, catcher, SCOPE, challenge, "link"))
    await page.locator("form input[type=text]").fill(username)
    await page.locator("form input[type=password]").fill(password)
    await page.locator("form button[type=submit]").first.click()
    await page.wait_for_load_state()
    return verifier


async def _verify(page: Any, *, birth: str = "", last4: str = "", edipi: str = "") -> str:
    assert "Verify your identity" in await page.title()
    await page.get_by_label("Date of birth").fill(birth)
    await page.get_by_label("Last four digits of your SSN").fill(last4)
    await page.get_by_label("DoD ID", exact=False).fill(edipi)
    await page.get_by_role("button", name="Verify").click()
    await page.wait_for_load_state()
    return await page.locator("main").inner_text()


def _events(live: Live, username: str) -> list[dict[str, Any]]:
    store = live.app.state.smart_auth.store
    return list(store.events.find({"username": username, "action": "link"}))


async def test_wrong_answers_count_toward_the_lockout(live: Live, catcher: Any) -> None:
    store = live.app.state.smart_auth.store
    await anyio.to_thread.run_sync(
        lambda: accounts.create_account(
            store,
            username=LOCKED_USER,
            password=LOCKED_PASSWORD,
            level="dslogon-premium",
            fhir_user="",
            name="Ana Lucia Pena Torres",
        )
    )
    limit = live.app.state.smart_auth.policy.lockout.max_failures
    pw, browser = await open_browser()
    try:
        page = await browser.new_page()
        await _sign_in(page, live, catcher, LOCKED_USER, LOCKED_PASSWORD)
        texts = []
        # Ana's real birth date with a wrong last four, then a wrong EDIPI, ...: the same page.
        answers = [
            {"birth": BIRTH, "last4": "0000"},
            {"edipi": "1530000999"},
            {"birth": "1990-01-01", "last4": LAST4},
        ]
        for i in range(limit - 1):
            text = await _verify(page, **answers[i % len(answers)])
            assert "Record not found" in text and "DEERS" in text
            texts.append(text)
        assert len(set(texts)) == 1, "no hint of which field differed"
        # The attempt that reaches the limit locks the account: the same page still.
        text = await _verify(page, birth="1990-01-01", last4="1111")
        assert text == texts[0]
    finally:
        await browser.close()
        await pw.stop()
    rows = await anyio.to_thread.run_sync(_events, live, LOCKED_USER)
    assert [r["outcome"] for r in rows].count("failure") == limit
    assert any(r["outcome"] == "lockout" for r in rows)
    # Locked: the password itself no longer signs in.
    user = await anyio.to_thread.run_sync(lambda: store.users.find_one({"_id": LOCKED_USER}))
    assert user["locked_until"] is not None and user["fhirUser"] == ""


async def test_the_right_answers_link_the_account(live: Live, catcher: Any) -> None:
    pw, browser = await open_browser()
    try:
        page = await browser.new_page()
        verifier = await _sign_in(page, live, catcher, UNLINKED["username"], UNLINKED["password"])
        text = await _verify(page, birth="1970-01-01", last4=LAST4)
        assert "Record not found" in text
        text = await _verify(page, birth=BIRTH, last4=LAST4)
        assert "Record not found" not in text
        await page.get_by_role("button", name="Allow access").click()
        await page.wait_for_url(catcher.url + "*")
    finally:
        await browser.close()
        await pw.stop()
    store = live.app.state.smart_auth.store
    user = await anyio.to_thread.run_sync(lambda: store.users.find_one({"_id": "ana.pena"}))
    assert user["fhirUser"] == f"Patient/{UNLINKED_ID}" and user["failures"] == 0
    rows = await anyio.to_thread.run_sync(_events, live, "ana.pena")
    assert [r["outcome"] for r in rows] == ["failure", "success"]
    assert rows[1]["fhirUser"] == f"Patient/{UNLINKED_ID}"
    # The code the app got gives a token naming her record, which it may read (SSN masked).
    assert catcher.hits and catcher.hits[-1]["state"] == "link"
    async with httpx.AsyncClient(base_url=live.base) as http:
        r = await http.post(
            "/auth/token",
            data={
                "grant_type": "authorization_code",
                "code": catcher.hits[-1]["code"],
                "redirect_uri": catcher.url,
                "code_verifier": verifier,
                "client_id": PUBLIC["client_id"],
            },
        )
        assert r.status_code == 200, r.text
        claims = r.json()["id_token"].split(".")[1]
        claims += "=" * (-len(claims) % 4)
        assert json.loads(base64.urlsafe_b64decode(claims))["fhirUser"].endswith(
            f"Patient/{UNLINKED_ID}"
        )
        token = r.json()["access_token"]
        me = await http.get(
            f"/fhir/Patient/{UNLINKED_ID}", headers={"Authorization": f"Bearer {token}"}
        )
        assert me.status_code == 200, me.text
        assert ssn_of(UNLINKED_EDIPI) not in me.text
