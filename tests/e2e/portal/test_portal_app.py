"""The portal app (/portal/) in headless Chromium, as four seed roles, on one server.

Each role signs in on the real login and consent pages (client-js does the SMART launch
with PKCE), opens every page at phone width (390 px) and leaves a screenshot of each in
test-artifacts/portal/ (docs/testing.md). The leak checks: acting for the 15-year-old, the
parent's pages show none of her labelled records (and do show her ordinary immunization, so
the check would notice a page that shows nothing); another family's names never appear.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

import pytest

from seed_data.population import build_population
from tests.e2e.portal.conftest import SHOTS
from tests.integration.auth.conftest import login_for

pytestmark = pytest.mark.e2e

PAGES = ["home", "record", "messages", "appointments", "prescriptions", "privacy"]
NAV = {
    "home": "Home",
    "record": "Health record",
    "messages": "Messages",
    "appointments": "Appointments",
    "prescriptions": "Prescriptions",
    "privacy": "Privacy",
}
SOPHIA = "adolescent-sophia-carter"
SENSITIVE = {"R", "V", "ETH", "PSY", "SEX", "SDV", "STD", "HIV", "MST", "ADOL", "PSYTHPN"}


def _texts(res: dict[str, Any]) -> set[str]:
    """The words a page would show of a resource: its code, topic, description, message."""
    out: set[str] = set()
    for key in ("code", "vaccineCode", "type", "medicationCodeableConcept"):
        c = res.get(key) or {}
        if isinstance(c, dict):
            out.add(c.get("text") or "")
            out.update(x.get("display", "") for x in c.get("coding", []))
    out.add((res.get("topic") or {}).get("text", ""))
    out.add(res.get("description") or "")
    out.update(p.get("contentString", "") for p in res.get("payload", []))
    return {t for t in out if len(t) >= 8}


def sophia_words() -> tuple[set[str], set[str]]:
    """(the texts of her labelled resources, of her ordinary immunizations)."""
    hidden: set[str] = set()
    shown: set[str] = set()
    for res in build_population(date.today()):
        subject = (res.get("subject") or res.get("patient") or {}).get("reference")
        if subject != f"Patient/{SOPHIA}":
            continue
        labels = {s.get("code") for s in res.get("meta", {}).get("security", [])}
        if labels & SENSITIVE:
            hidden |= _texts(res)
        elif res["resourceType"] == "Immunization":
            shown |= _texts(res)
    ordinary = set().union(
        *(
            _texts(r)
            for r in build_population(date.today())
            if r.get("meta", {}).get("security") is None
            and (r.get("subject") or {}).get("reference") == f"Patient/{SOPHIA}"
        )
    )
    return hidden - ordinary, shown


def sign_in(browser: Any, base: str, role: str) -> Any:
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.goto(f"{base}/portal/")
    page.wait_for_url(re.compile(r".*/auth/authorize.*"))
    who = login_for(role)
    page.locator("form input[type=text]").fill(who["username"])
    page.locator("form input[type=password]").fill(who["password"])
    page.locator("form button[type=submit]").first.click()
    page.get_by_role("button", name="Allow access").click()
    page.wait_for_selector("main[data-ready='1']", timeout=20000)
    return page


def open_page(page: Any, name: str) -> str:
    # Keyboard navigation: focus the link and press Enter, as a keyboard user would.
    page.get_by_role("navigation").get_by_role("link", name=NAV[name], exact=True).focus()
    page.keyboard.press("Enter")
    page.wait_for_selector(f"main[data-page='{name}'][data-ready='1']", timeout=20000)
    return str(page.locator("main").inner_text())


def tour(page: Any, prefix: str) -> dict[str, str]:
    texts = {}
    for name in PAGES:
        texts[name] = open_page(page, name)
        shown = f"{page.locator('header').inner_text()}\n{texts[name]}"
        assert not re.search(r"\b(null|undefined|NaN|\[object Object\])\b", shown), shown
        page.screenshot(path=str(SHOTS / f"{prefix}-{name}.png"), full_page=True)
    return texts


def no_error_boxes(page: Any) -> list[str]:
    return [str(t) for t in page.locator("main .error").all_inner_texts()]


def test_sponsor_and_his_adolescent(portal_server: str, chromium: Any) -> None:
    page = sign_in(chromium, portal_server, "sponsor")
    header = page.locator("header").inner_text()
    assert "James" in header and "DS Logon Premium" in header
    own = tour(page, "sponsor")
    assert "Lab results" in own["record"] and "Reference range" in own["record"]
    assert page.locator("main canvas").count() == 0  # the record page is not the current one
    open_page(page, "record")
    assert page.locator("main canvas").count() >= 1  # a trend chart of a repeated lab test
    assert "Family Medicine" in own["messages"] or "Conversation" in own["messages"]
    assert no_error_boxes(page) == []

    hidden, shown = sophia_words()
    assert hidden and shown
    page.get_by_label("Showing the record of").select_option(SOPHIA)
    page.wait_for_selector("main[data-ready='1']")
    texts = tour(page, "sponsor-as-adolescent")
    everything = "\n".join(texts.values())
    leaked = [w for w in hidden if w.lower() in everything.lower()]
    assert leaked == [], f"the parent's pages show the adolescent's labelled records: {leaked}"
    assert any(w in texts["record"] for w in shown), "her ordinary immunization is missing"
    assert "aged 12 to 17" in texts["home"]
    page.context.close()


def test_spouse_writes_to_the_clinic_and_finds_times(portal_server: str, chromium: Any) -> None:
    page = sign_in(chromium, portal_server, "spouse")
    texts = tour(page, "spouse")
    assert "Maria" in page.locator("header").inner_text()
    assert "Robert Alvarez" not in "\n".join(texts.values())

    # A new message: recipient search by clinic name ($recipients), then send; the app
    # opens the new thread, which shows the message the server stored.
    open_page(page, "messages")
    page.get_by_label("Find a clinic or care team by name").fill("family medicine")
    page.get_by_role("button", name="Search recipients").click()
    page.get_by_role("radio").first.wait_for()
    page.get_by_label("Subject").fill("Travel vaccines")
    page.get_by_label("Message", exact=True).fill("Which vaccines do I need for a trip?")
    page.get_by_role("button", name="Send message").click()
    page.wait_for_selector("main[data-ready='1'] h1:text('Travel vaccines')", timeout=20000)
    assert "Which vaccines do I need for a trip?" in page.locator("main").inner_text()
    page.screenshot(path=str(SHOTS / "spouse-messages-thread.png"), full_page=True)

    # Free times: the operation's answer, or a plain-words note where the server has none.
    open_page(page, "appointments")
    page.get_by_role("button", name="Find free times").click()
    # "Searching…" is bare text; the answer is an element (a list, a note or an error).
    page.locator("main [aria-live] > *").first.wait_for(timeout=20000)
    found = page.locator("main [aria-live]").inner_text().strip()
    assert found and "{" not in found
    page.screenshot(path=str(SHOTS / "spouse-appointments-find.png"), full_page=True)
    book = page.get_by_role("button", name="Book this time")
    if book.count():  # the scheduling operations are there: book the first free time
        before = page.locator("main table").first.inner_text().count("booked")
        book.first.click()
        page.wait_for_selector("main td:text-is('booked'), main .error", timeout=20000)
        assert page.locator("main .error").count() == 0, page.locator("main .error").inner_text()
        assert page.locator("main table").first.inner_text().count("booked") == before + 1
        page.screenshot(path=str(SHOTS / "spouse-appointments-booked.png"), full_page=True)
    page.context.close()


def test_basic_retiree_sees_what_basic_allows_and_why(portal_server: str, chromium: Any) -> None:
    page = sign_in(chromium, portal_server, "basic-user")
    texts = tour(page, "basic")
    assert "DS Logon Basic" in page.locator("header").inner_text()
    assert "does not include lab results" in texts["record"]
    assert "Immunizations" in texts["record"] and "zoster" in texts["record"].lower()
    assert "does not include secure messages" in texts["messages"]
    assert no_error_boxes(page) == []  # the app never asks for what Basic cannot have
    page.context.close()


def test_cac_user(portal_server: str, chromium: Any) -> None:
    page = sign_in(chromium, portal_server, "cac-user")
    texts = tour(page, "cac")
    assert "CAC" in page.locator("header").inner_text()
    everything = "\n".join(texts.values())
    assert "Carter" not in everything  # another family's record never shows
    assert "Reports" in texts["record"]

    # Privacy -> connected apps: revoke the portal itself; its tokens stop working at once.
    open_page(page, "privacy")
    page.get_by_role("link", name="See and revoke connected apps").click()
    who = login_for("cac-user")
    page.locator("form input[type=text]").fill(who["username"])
    page.locator("form input[type=password]").fill(who["password"])
    page.locator("form button[type=submit]").first.click()
    page.wait_for_selector("text=MHS patient portal")
    assert "last used" in page.locator("main").inner_text()
    page.screenshot(path=str(SHOTS / "cac-connected-apps.png"), full_page=True)
    page.get_by_role("button", name="Stop MHS patient portal reaching my record").first.click()
    page.wait_for_selector("text=can no longer reach your record")
    page.goto(f"{portal_server}/portal/#home")
    alert = page.get_by_role("alert")
    alert.wait_for(timeout=20000)
    assert "revoked" in alert.inner_text()
    page.screenshot(path=str(SHOTS / "cac-after-revoke.png"), full_page=True)
    page.reload()  # as the message says: a new sign-in, not the dead token again
    page.wait_for_url(re.compile(r".*/auth/authorize.*"))
    page.context.close()
