"""The portal app (/portal/) in headless Chromium, as four seed roles, on one server.

Each role signs in on the real login and consent pages (client-js does the SMART launch
with PKCE), opens every page at phone width (390 px) and leaves a screenshot of each in
test-artifacts/portal/ (docs/testing.md). The leak checks: acting for the 15-year-old, the
parent's pages show none of her labelled records (and do show her ordinary immunization, so
the check would notice a page that shows nothing); another family's names never appear.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any

import pytest

from seed_data.population import build_population
from seed_data.scheduling import VISIT_TYPES, visit_type_concept
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
# The visit types the clinics offer (seed_data/scheduling.py): the same list for everyone.
CATALOGUE = {
    visit_type_concept(code)["coding"][0]["display"]
    for codes in VISIT_TYPES.values()
    for code in codes
}
FAMILY_MEDICINE = "Family Medicine Clinic, Building 2, 1st floor"
IM_PHARMACY = "Lakeside Internal Medicine Pharmacy"
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
    # The clinics' time zone, so times read as the seed's clinic hours.
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, timezone_id="America/New_York"
    )
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


# The page's text outside its choice lists, and the choices: a list of clinics or visit types
# is directory data (the same for everyone), checked apart from what the page says.
OUTSIDE_CHOICES = """() => { const m = document.querySelector('main').cloneNode(true);
  m.querySelectorAll('select').forEach((s) => s.remove()); document.body.append(m);
  const t = m.innerText; m.remove(); return t; }"""


def shown_text(page: Any) -> str:
    return str(page.evaluate(OUTSIDE_CHOICES))


def choices(page: Any) -> set[str]:
    return {str(t).strip() for t in page.locator("main select option").all_inner_texts()}


def tour(page: Any, prefix: str, options: set[str] | None = None) -> dict[str, str]:
    texts = {}
    for name in PAGES:
        open_page(page, name)
        texts[name] = shown_text(page)
        if options is not None:
            options |= choices(page)
        shown = f"{page.locator('header').inner_text()}\n{texts[name]}"
        # 390 px: nothing wider than the screen (wide tables scroll inside their box).
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, name
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
    options: set[str] = set()
    texts = tour(page, "sponsor-as-adolescent", options)
    everything = "\n".join(texts.values())
    leaked = [w for w in hidden if w.lower() in everything.lower()]
    assert leaked == [], f"the parent's pages show the adolescent's labelled records: {leaked}"
    # The choice lists hold the clinics' catalogue (directory data) and nothing of hers.
    leaked = [w for w in hidden if any(w.lower() in o.lower() for o in options - CATALOGUE)]
    assert leaked == [], f"a choice list shows the adolescent's labelled records: {leaked}"
    assert any(w in texts["record"] for w in shown), "her ordinary immunization is missing"
    assert "aged 12 to 17" in texts["home"]
    page.context.close()


def flash_after(page: Any, action: Any) -> str:
    """Run `action`, wait for the page it leads to, and give its one-line outcome."""
    page.locator("main").evaluate("m => m.removeAttribute('data-ready')")
    action()
    page.wait_for_selector("main[data-ready='1'] p.done", timeout=20000)
    assert no_error_boxes(page) == []
    return str(page.locator("main p.done").inner_text())


def card(page: Any, appointment_id: str) -> Any:
    return page.locator(f"main li[data-appointment='{appointment_id}']")


def new_booking(page: Any, known: set[str]) -> str:
    ids = page.locator("main li[data-status='booked']").evaluate_all(
        "xs => xs.map((x) => x.dataset.appointment)"
    )
    fresh = [i for i in ids if i not in known]
    assert len(fresh) == 1, (ids, known)
    return str(fresh[0])


def test_sponsor_books_moves_cancels_requests_and_fills_a_clipboard(
    portal_server: str, chromium: Any
) -> None:
    page = sign_in(chromium, portal_server, "sponsor")
    open_page(page, "appointments")
    before = set(
        page.locator("main li[data-appointment]").evaluate_all(
            "xs => xs.map((x) => x.dataset.appointment)"
        )
    )

    # Book: a follow-up at Family Medicine (a visit type with a clipboard).
    page.get_by_label("Clinic").first.select_option(label=FAMILY_MEDICINE)
    page.get_by_label("Kind of visit").first.select_option(label="Follow-up visit")
    page.get_by_role("button", name="Find free times").click()
    page.get_by_role("button", name="Book this time").first.wait_for(timeout=20000)
    page.screenshot(path=str(SHOTS / "sponsor-appointments-find.png"), full_page=True)
    done = flash_after(
        page, lambda: page.get_by_role("button", name="Book this time").first.click()
    )
    assert done.startswith("Booked: Follow-up visit")
    first = new_booking(page, before)
    assert "to fill in" in card(page, first).inner_text()  # the booking asked for a clipboard
    page.screenshot(path=str(SHOTS / "sponsor-appointments-booked.png"), full_page=True)

    # Move it: $find for the same clinic and visit type, then $reschedule.
    card(page, first).get_by_role("link", name="Move this appointment").click()
    page.wait_for_selector("main[data-ready='1'] h1:text('Move an appointment')", timeout=20000)
    assert page.get_by_label("Kind of visit").input_value() == "follow-up"
    page.get_by_label("Reason for moving (optional)").fill("a clash at work")
    page.get_by_role("button", name="Find free times").click()
    page.get_by_role("button", name="Move to this time").first.wait_for(timeout=20000)
    page.screenshot(path=str(SHOTS / "sponsor-appointments-reschedule.png"), full_page=True)
    done = flash_after(
        page, lambda: page.get_by_role("button", name="Move to this time").first.click()
    )
    assert done.startswith("Moved: Follow-up visit is now on")
    assert card(page, first).count() == 0  # the old booking is no longer upcoming
    past = page.get_by_role("region", name="Past and cancelled").inner_text()
    assert "Follow-up visit" in past and "cancelled" in past
    moved = new_booking(page, before)
    assert moved != first

    # The clipboard of the new booking: the form from the Questionnaire, a refused send
    # while a required question is open, then the answers.
    card(page, moved).get_by_role("link", name="Fill in the clipboard").click()
    page.wait_for_selector("main[data-ready='1'] form", timeout=20000)
    page.get_by_label("What is the main reason for your visit?").fill("Cholesterol recheck")
    page.get_by_role("button", name="Send the clipboard").click()
    alert = page.locator("main [role=alert]")
    assert "Have your medications changed since your last visit?" in alert.inner_text()
    follow_up = page.get_by_label("Which medications changed, and how?")
    assert not follow_up.is_visible()  # enableWhen: shown only after a Yes
    changed = page.get_by_role("group", name="Have your medications changed")
    changed.get_by_label("Yes").check()
    follow_up.fill("Started fish oil")
    page.get_by_label("Rate your pain today").fill("2")
    page.get_by_role("group", name="Do you smoke tobacco?").get_by_label(
        "Never smoked tobacco"
    ).check()
    page.screenshot(path=str(SHOTS / "sponsor-clipboard-form.png"), full_page=True)
    done = flash_after(page, lambda: page.get_by_role("button", name="Send the clipboard").click())
    assert done.startswith("Clipboard sent")
    assert "completed" in card(page, moved).inner_text()
    card(page, moved).get_by_role("link", name="See your answers").click()
    page.wait_for_selector("main[data-ready='1'] dl.answers", timeout=20000)
    answers = page.locator("main dl.answers").inner_text()
    assert "Started fish oil" in answers and "Never smoked tobacco" in answers
    page.screenshot(path=str(SHOTS / "sponsor-clipboard-completed.png"), full_page=True)

    # Cancel the moved booking (asked once more, with a reason).
    open_page(page, "appointments")
    # From the keyboard: the confirmation's reason field takes the focus, Tab reaches "Yes".
    card(page, moved).get_by_role("button", name="Cancel this appointment").focus()
    page.keyboard.press("Enter")
    page.keyboard.type("feeling better")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Yes, cancel it"
    done = flash_after(page, lambda: page.keyboard.press("Enter"))
    assert page.evaluate("document.activeElement.className") == "done"  # focus on the outcome
    assert done.startswith("Cancelled: Follow-up visit")
    assert card(page, moved).count() == 0
    past = page.get_by_role("region", name="Past and cancelled").inner_text()
    assert "feeling better" in past and "a clash at work" in past  # the reasons reached the server
    page.screenshot(path=str(SHOTS / "sponsor-appointments-cancelled.png"), full_page=True)

    # A request for a visit type the clinic books itself.
    page.get_by_label("Clinic").nth(1).select_option(label=FAMILY_MEDICINE)
    page.get_by_label("Kind of visit").nth(1).select_option(label="Minor procedure")
    page.get_by_label("What is the visit for?").fill("Wart removal")
    soon, later = date.today() + timedelta(days=3), date.today() + timedelta(days=20)
    page.get_by_label("Earliest date").fill(soon.isoformat())
    page.get_by_label("Latest date").fill(later.isoformat())
    done = flash_after(page, lambda: page.get_by_role("button", name="Send the request").click())
    assert done.startswith("Request sent: Minor procedure")
    requests = page.get_by_role("region", name="Your appointment requests").inner_text()
    assert "Wart removal" in requests and "sent to the clinic's scheduling team" in requests
    page.screenshot(path=str(SHOTS / "sponsor-appointments-requested.png"), full_page=True)
    # ... and withdrawn again: its state says so.
    asked = page.locator("main li[data-status='proposed']").filter(has_text="Minor procedure")
    asked.get_by_role("button", name="Withdraw this request").click()
    done = flash_after(page, lambda: page.get_by_role("button", name="Yes, withdraw it").click())
    assert done.startswith("Withdrawn: Minor procedure")
    requests = page.get_by_role("region", name="Your appointment requests").inner_text()
    assert "State: withdrawn" in requests

    # Prescriptions: a refill at a chosen pharmacy, a renewal with a note.
    open_page(page, "prescriptions")
    assert "not available on this server" not in page.locator("main").inner_text()
    rx = page.locator("main li[data-prescription='medrx-james-lisinopril']")
    assert "Refills left: 5" in rx.inner_text()
    rx.get_by_label("Pharmacy to pick up").select_option(label=IM_PHARMACY)
    done = flash_after(page, lambda: rx.get_by_role("button", name="Request a refill").click())
    assert done.startswith(f"Refill of lisinopril 10 MG Oral Tablet requested at {IM_PHARMACY}")
    assert "Refills left: 4" in rx.inner_text()
    assert "Refill request" in rx.inner_text() and IM_PHARMACY in rx.inner_text()
    nap = page.locator("main li[data-prescription='medrx-james-naproxen']")
    nap.get_by_label("Note for your doctor").fill("still needed for my back")
    done = flash_after(page, lambda: nap.get_by_role("button", name="Request a renewal").click())
    assert done.startswith("Renewal of naproxen sodium 220 MG Oral Tablet requested")
    asked_for = nap.locator("li[data-task]").first.inner_text()
    assert asked_for.startswith("Renewal request") and "waiting to be looked at" in asked_for
    assert "to Dr. Rachel Kim" in asked_for  # the PCM, named through _include=Task:owner
    oxy = page.locator("main li[data-prescription='medrx-james-oxycodone']")
    assert oxy.get_by_role("button").count() == 0  # the server's eligibility says none
    page.screenshot(path=str(SHOTS / "sponsor-prescriptions-requested.png"), full_page=True)

    # Acting for the 15-year-old: a confidential visit type cannot be requested by the
    # parent; the refusal is in plain words, and none of her labelled records shows.
    hidden, _ = sophia_words()
    page.get_by_label("Showing the record of").select_option(SOPHIA)
    page.wait_for_selector("main[data-page='prescriptions'][data-ready='1']")
    open_page(page, "appointments")
    page.get_by_label("Clinic").nth(1).select_option(label=FAMILY_MEDICINE)
    page.get_by_label("Kind of visit").nth(1).select_option(label="Confidential adolescent visit")
    page.get_by_label("What is the visit for?").fill("Check-up")
    page.get_by_label("Earliest date").fill(soon.isoformat())
    page.get_by_label("Latest date").fill(later.isoformat())
    page.get_by_role("button", name="Send the request").click()
    refusal = page.locator("main [role=alert]")
    refusal.wait_for(timeout=20000)
    said = refusal.inner_text()
    assert said.startswith(("The server refused", "You are not allowed", "There is no")), said
    assert "{" not in said and "OperationOutcome" not in said
    page.screenshot(path=str(SHOTS / "sponsor-as-adolescent-request-refused.png"), full_page=True)
    shown = shown_text(page)
    open_page(page, "prescriptions")
    shown += shown_text(page)
    leaked = [w for w in hidden if w.lower() in shown.lower()]
    assert leaked == [], f"the parent's pages show the adolescent's labelled records: {leaked}"
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
    booked = page.locator("main li[data-status='booked']")
    before = booked.count()
    page.get_by_role("button", name="Book this time").first.click()
    page.wait_for_selector("main[data-ready='1'] p.done", timeout=20000)
    assert no_error_boxes(page) == []
    assert "Booked:" in page.locator("main p.done").inner_text()
    assert booked.count() == before + 1
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
