"""Server-rendered HTML for login, consent and errors: plain forms that work without
JavaScript, every input with a ``<label>`` (WCAG 2.1 success criteria 1.3.1 and 3.3.2).

Contract (DESIGN.md): the login page has ONE form with a text input for the username and a
password input; the consent page has ONE form with an approve button. Everything rendered
from data goes through :func:`html.escape`.
"""

from __future__ import annotations

from html import escape

from smart_auth import scopes as sc
from smart_auth.flow import ConsentView, LoginView
from smart_auth.linking import NOT_FOUND, VerifyView

TYPE_WORDS = {
    "*": "all of the health record",
    "Patient": "demographics (name, birth date, contact details)",
    "Observation": "lab results, vital signs and other observations",
    "DiagnosticReport": "lab, imaging and pathology reports",
    "Appointment": "appointments",
    "Immunization": "immunizations",
    "AllergyIntolerance": "allergies",
    "Condition": "health conditions and diagnoses",
    "MedicationRequest": "prescriptions, refills and renewals",
    "MedicationDispense": "medicines dispensed",
    "Communication": "secure messages with the care team",
    "CommunicationRequest": "message requests",
    "DocumentReference": "clinical documents and notes",
    "Encounter": "visits",
    "Procedure": "procedures",
    "CarePlan": "care plans",
    "CareTeam": "care team members",
    "Coverage": "insurance coverage",
    "Practitioner": "clinicians' details",
    "QuestionnaireResponse": "completed forms and questionnaires",
}
IDENTITY_WORDS = {
    "openid": "Confirm who you are when you sign in",
    "fhirUser": "Know which record is yours (your name and record link)",
    "profile": "See your name",
    "launch": "Open in the context the EHR chose",
    "launch/patient": "Know which patient's record you chose",
    "launch/encounter": "Know which visit is open",
}
STYLE = """
body{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;
line-height:1.5;color:#1b1b1b}h1{font-size:1.5rem}fieldset{border:1px solid #aaa;
margin:1rem 0;padding:.5rem 1rem}label{display:block;margin:.4rem 0}
input[type=text],input[type=password],input[type=date],select{font-size:1rem;padding:.3rem;width:100%;
max-width:24rem;display:block}button{font-size:1rem;padding:.5rem 1.2rem;margin-right:1rem}
.error{color:#b50909;font-weight:bold}.note{color:#555;font-size:.9rem}
"""


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>"
    )


def login_page(view: LoginView) -> str:
    error = f'<p class="error" role="alert">{escape(view.error)}</p>' if view.error else ""
    cards = ""
    if view.card_simulation:
        cards = (
            '<label for="method">Sign in with</label>'
            '<select id="method" name="method">'
            '<option value="auto" selected>My account\'s usual sign-in (DS Logon or Managed account)</option>'
            '<option value="dslogon">DS Logon</option>'
            '<option value="cac">CAC (simulated in development: the password stands in for the card PIN)</option>'
            '<option value="piv">PIV card (simulated in development: the password stands in for the PIN)</option>'
            "</select>"
        )
    card_button = ""
    if view.card_certificate:
        card_button = (
            '<button type="submit" formaction="/auth/login/card" formnovalidate>'
            "Sign in with my CAC or PIV card</button>"
        )
    body = (
        "<h1>Sign in to the MHS patient portal</h1>"
        f"<p><strong>{escape(view.client_name)}</strong> wants to connect to your health record.</p>"
        f"{error}"
        '<form method="post" action="/auth/login">'
        f'<input type="hidden" name="tx" value="{escape(view.tx)}">'
        '<label for="username">Username</label>'
        '<input id="username" name="username" type="text" autocomplete="username" '
        'autocapitalize="none" spellcheck="false" required>'
        '<label for="password">Password</label>'
        '<input id="password" name="password" type="password" '
        'autocomplete="current-password" required>'
        f"{cards}"
        '<p><button type="submit">Sign in</button>'
        f"{card_button}</p>"
        "</form>"
        '<p class="note">After 5 failed attempts the account is locked. '
        "Never enter your password in an app: only on this page.</p>"
    )
    return _page("Sign in", body)


def verify_page(view: VerifyView) -> str:
    """Identity verification for a DS Logon account not yet linked to a record
    (linking.py): one form, date of birth and the SSN's last four digits, or the DoD ID."""
    notice = ""
    if view.not_found:
        notice = (
            '<h2 role="alert">Record not found</h2>'
            f'<p class="error" id="not-found">{escape(NOT_FOUND)}</p>'
        )
    elif view.error:
        notice = f'<p class="error" role="alert">{escape(view.error)}</p>'
    body = (
        "<h1>Verify your identity</h1>"
        "<p>Your DS Logon account is not yet connected to a health record. Confirm who you "
        f"are so that <strong>{escape(view.client_name)}</strong> can open your record.</p>"
        f"{notice}"
        '<form method="post" action="/auth/verify">'
        f'<input type="hidden" name="tx" value="{escape(view.tx)}">'
        "<fieldset><legend>Date of birth and Social Security number</legend>"
        '<label for="birthdate">Date of birth</label>'
        '<input id="birthdate" name="birthdate" type="date" autocomplete="bday">'
        '<label for="ssn_last4">Last four digits of your SSN</label>'
        '<input id="ssn_last4" name="ssn_last4" type="text" inputmode="numeric" '
        'pattern="[0-9]{4}" maxlength="4" autocomplete="off">'
        "</fieldset>"
        "<fieldset><legend>Or your DoD ID number</legend>"
        '<label for="edipi">DoD ID (EDIPI, 10 digits, on the back of your ID card)</label>'
        '<input id="edipi" name="edipi" type="text" inputmode="numeric" '
        'pattern="[0-9]{10}" maxlength="10" autocomplete="off">'
        "</fieldset>"
        '<p><button type="submit">Verify</button></p>'
        "</form>"
        '<p class="note">Failed attempts count toward the account lockout, as failed '
        "sign-ins do.</p>"
    )
    return _page("Verify your identity", body)


def describe(scope_text: str) -> str:
    """A resource scope in plain words, e.g. "See and search your allergies"."""
    try:
        scope = sc.parse_scope(scope_text)
    except sc.InvalidScope:
        scope = None
    if scope is None:
        return scope_text
    perms = scope.permissions
    verbs = [
        w
        for letter, w in (
            ("r", "see"),
            ("s", "search"),
            ("c", "add"),
            ("u", "change"),
            ("d", "delete"),
        )
        if letter in perms
    ]
    phrase = verbs[0] if len(verbs) == 1 else ", ".join(verbs[:-1]) + " and " + verbs[-1]
    what = TYPE_WORDS.get(scope.resource_type, scope.resource_type)
    whose = {"patient": "the chosen patient's", "user": "the", "system": "all patients'"}[
        scope.context
    ]
    text = f"{phrase.capitalize()} {whose} {what}"
    if scope.query:
        limits = ", ".join(f"{k} {v.rsplit('|', 1)[-1]}" for k, v in scope.query)
        text += f" (only {limits})"
    if scope.resource_type != "*":
        text += f" [{scope.resource_type}]"
    return text


def consent_page(view: ConsentView) -> str:
    items = "".join(
        f'<label><input type="checkbox" name="scope" value="{escape(s)}" checked> '
        f"{escape(describe(s))}</label>"
        for s in view.resource_scopes
    )
    records = (
        f"<fieldset><legend>Access to health records (untick what you do not want to share)"
        f"</legend>{items}</fieldset>"
        if items
        else "<p>The app asks for no health records.</p>"
    )
    identity = "".join(
        f"<li>{escape(IDENTITY_WORDS.get(w, w))}</li>" for w in view.identity if w in IDENTITY_WORDS
    )
    identity_html = f"<p>The app will also be able to:</p><ul>{identity}</ul>" if identity else ""
    patients = ""
    if view.patient_free_text:
        patients = (
            '<label for="patient">Patient record id</label>'
            '<input id="patient" name="patient" type="text" required>'
        )
    elif len(view.patients) > 1:
        radios = "".join(
            f'<label><input type="radio" name="patient" value="{escape(p)}"'
            f"{' checked' if i == 0 else ''}> {escape(view.patient_names.get(p, p))}</label>"
            for i, p in enumerate(view.patients)
        )
        patients = (
            f"<fieldset><legend>Whose record should the app open?</legend>{radios}</fieldset>"
        )
    elif view.patients:
        name = view.patient_names.get(view.patients[0], view.patients[0])
        patients = f"<p>Record: <strong>{escape(name)}</strong></p>"
    refresh = ""
    if view.refresh == "offline_access":
        refresh = (
            '<label><input type="checkbox" name="scope" value="offline_access" checked> '
            "Offline access: keep access when you are not using the app, until you revoke it "
            "(up to 90 days without use)</label>"
        )
    elif view.refresh == "online_access":
        refresh = (
            '<label><input type="checkbox" name="scope" value="online_access" checked> '
            "Stay connected while you use the app today</label>"
        )
    withheld = ""
    if view.withheld:
        listed = "".join(f"<li>{escape(describe(s))}</li>" for s in view.withheld)
        withheld = (
            f'<p class="note">Your {escape(view.level_label)} sign-in does not allow sharing:</p>'
            f'<ul class="note">{listed}</ul>'
        )
    body = (
        f"<h1>Allow {escape(view.client_name)} to access your record?</h1>"
        f"<p>Signed in as <strong>{escape(view.user_name)}</strong> "
        f"({escape(view.level_label)}).</p>"
        '<form method="post" action="/auth/consent">'
        f'<input type="hidden" name="tx" value="{escape(view.tx)}">'
        f"{patients}{records}{refresh}{identity_html}{withheld}"
        '<p><button type="submit" name="approve" value="1">Allow access</button>'
        '<button type="submit" name="deny" value="1">Deny</button></p>'
        "</form>"
        '<p class="note">You can revoke this access at any time on the '
        '<a href="/auth/manage">connected apps</a> page.</p>'
    )
    return _page("Allow access", body)


def error_page(message: str) -> str:
    body = (
        "<h1>This sign-in request cannot continue</h1>"
        f'<p class="error" role="alert">{escape(message)}</p>'
        "<p>Close this window and start again from the app.</p>"
    )
    return _page("Sign-in problem", body)


def info_page(title: str, message: str) -> str:
    return _page(title, f"<h1>{escape(title)}</h1><p>{escape(message)}</p>")
