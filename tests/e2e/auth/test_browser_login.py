"""Headless Chromium signs in and approves on the real pages (Playwright, system Chromium)."""

from __future__ import annotations

import asyncio
from urllib.parse import urlencode

import httpx
import pytest

from tests.e2e.auth.conftest import CHROMIUM, CHROMIUM_ARGS, require_browser
from tests.integration.auth.conftest import PUBLIC, login_for, pkce

pytestmark = pytest.mark.e2e


async def open_browser():
    require_browser()
    from playwright.async_api import async_playwright

    pw = await async_playwright().start()
    browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    return pw, browser


def authorize_url(live, catcher, scope: str, challenge: str, state: str) -> str:
    params = {
        "response_type": "code",
        "client_id": PUBLIC["client_id"],
        "redirect_uri": catcher.url,
        "scope": scope,
        "state": state,
        "aud": live.base + "/fhir",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    return f"{live.base}/auth/authorize?{urlencode(params)}"


async def test_browser_login_consent_and_token(live_auth, catcher):
    pw, browser = await open_browser()
    try:
        page = await browser.new_page()
        verifier, challenge = pkce()
        scope = "openid fhirUser launch/patient patient/*.rs offline_access"
        await page.goto(authorize_url(live_auth, catcher, scope, challenge, "s-1"))
        who = login_for("sponsor")
        # Driven by form and input type, as DESIGN.md promises: no CSS classes or ids.
        await page.locator("form input[type=text]").fill(who["username"])
        await page.locator("form input[type=password]").fill(who["password"])
        await page.get_by_label("Username").fill(who["username"])  # labels are real labels
        await page.locator("form button[type=submit]").first.click()
        await page.wait_for_load_state()
        assert await page.locator("form").count() == 1
        await page.get_by_label("Offline access", exact=False).is_checked()
        await page.get_by_role("radio", name="Liam", exact=False).check()
        await page.get_by_role("button", name="Allow access").click()
        await page.wait_for_url(catcher.url + "*")
        assert "You can close this window" in await page.content()
    finally:
        await browser.close()
        await pw.stop()
    assert len(catcher.hits) == 1 and catcher.hits[0]["state"] == "s-1"
    async with httpx.AsyncClient(base_url=live_auth.base) as http:
        r = await http.post(
            "/auth/token",
            data={
                "grant_type": "authorization_code",
                "code": catcher.hits[0]["code"],
                "redirect_uri": catcher.url,
                "code_verifier": verifier,
                "client_id": PUBLIC["client_id"],
            },
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["patient"] == "child-liam-carter"
        assert body["refresh_token"]
        me = await http.get(
            "/fhir/Patient", headers={"Authorization": f"Bearer {body['access_token']}"}
        )
        assert me.status_code == 200 and me.json()["patient"] == "child-liam-carter"


async def test_browser_wrong_password_shows_the_form_again(live_auth, catcher):
    pw, browser = await open_browser()
    try:
        page = await browser.new_page()
        _, challenge = pkce()
        await page.goto(authorize_url(live_auth, catcher, "patient/*.rs", challenge, "s-2"))
        await page.locator("form input[type=text]").fill(login_for("spouse")["username"])
        await page.locator("form input[type=password]").fill("not-the-password")
        await page.locator("form button[type=submit]").first.click()
        await page.wait_for_load_state()
        alert = page.get_by_role("alert")
        assert "incorrect" in (await alert.inner_text())
        assert await page.locator("form input[type=password]").count() == 1
    finally:
        await browser.close()
        await pw.stop()
    await asyncio.sleep(0)
    assert catcher.hits == []
