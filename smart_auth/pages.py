"""Server-rendered HTML for login, consent and errors: plain forms that work without
JavaScript, every input with a ``<label>`` (WCAG 2.1 success criteria 1.3.1 and 3.3.2).

Contract (DESIGN.md): the login page has ONE form with a text input for the username and a
password input; the consent page has ONE form with an approve button. Everything rendered
from data goes through :func:`html.escape`.
"""

from __future__ import annotations

from datetime import datetime
from html import escape

from smart_auth import scopes as sc
from smart_auth.flow import ConsentView, LoginView
from smart_auth.linking import NOT_FOUND, VerifyView
from smart_auth.manage import ConnectedApp, Session

TYPE_WORDS = {
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
ul.apps{list-style:none;padding:0}ul.apps>li{border:1px solid #aaa;margin:1rem 0;padding:.5rem 1rem}
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
    # Plain words (issue 16 item 4): "everything in the chosen patient's health record",
    # never "the chosen patient's all of the health record".
    record = {
        "patient": "the chosen patient's health record",
        "user": "the health records you may open",
        "system": "every patient's health record",
    }[scope.context]
    if scope.resource_type == "*":
        text = f"{phrase.capitalize()} everything in {record}"
    else:
        what = TYPE_WORDS.get(scope.resource_type, _split_words(scope.resource_type))
        text = f"{phrase.capitalize()} {what} in {record}"
    if scope.query:
        limits = ", ".join(f"{k} {v.rsplit('|', 1)[-1]}" for k, v in scope.query)
        text += f" (only {limits})"
    return text


def _split_words(type_name: str) -> str:
    """A resource type as words: "ServiceRequest" -> "service requests"."""
    words = "".join(" " + c.lower() if c.isupper() else c for c in type_name).strip()
    return words + "s"


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
    patients = _patient_picker(view)
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


def _patient_picker(view: ConsentView) -> str:
    """Whose record: names, never ids. A clinician picks among the patients of its care
    teams, with a search box that narrows the list (a button of the same form, so the page
    needs no script)."""
    if view.patient_free_text:
        return (
            '<label for="patient">Patient record id</label>'
            '<input id="patient" name="patient" type="text" required>'
        )
    if len(view.patients) == 1 and not view.searchable:
        name = view.patient_names.get(view.patients[0], view.patients[0])
        return f"<p>Record: <strong>{escape(name)}</strong></p>"
    if not view.patients and not view.searchable:
        return ""
    search = ""
    if view.searchable:
        search = (
            '<label for="find">Find a patient by name</label>'
            f'<input id="find" name="find" type="search" value="{escape(view.find)}">'
            '<button type="submit" name="search" value="1" formnovalidate>Find</button>'
        )
    shown = view.shown_patients if view.shown_patients is not None else view.patients
    radios = "".join(
        f'<label><input type="radio" name="patient" value="{escape(p)}"'
        f"{' checked' if i == 0 else ''} required> {escape(view.patient_names.get(p, p))}"
        "</label>"
        for i, p in enumerate(shown)
    )
    if not radios:
        radios = '<p role="status">No patient of your care teams matches that name.</p>'
    legend = (
        "Which patient of your care teams should the app open?"
        if view.searchable
        else "Whose record should the app open?"
    )
    return f"<fieldset><legend>{legend}</legend>{search}{radios}</fieldset>"


def error_page(message: str) -> str:
    body = (
        "<h1>This sign-in request cannot continue</h1>"
        f'<p class="error" role="alert">{escape(message)}</p>'
        "<p>Close this window and start again from the app.</p>"
    )
    return _page("Sign-in problem", body)


def info_page(title: str, message: str) -> str:
    return _page(title, f"<h1>{escape(title)}</h1><p>{escape(message)}</p>")


def manage_login_page(error: str | None = None) -> str:
    """The connected-apps page's sign-in: one form, a text and a password input."""
    alert = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    body = (
        "<h1>Connected apps</h1>"
        "<p>Sign in to see the apps you allowed to reach your health record, and to stop any "
        "of them.</p>"
        f"{alert}"
        '<form method="post" action="/auth/manage/login">'
        '<label for="username">Username</label>'
        '<input id="username" name="username" type="text" autocomplete="username" '
        'autocapitalize="none" spellcheck="false" required>'
        '<label for="password">Password</label>'
        '<input id="password" name="password" type="password" '
        'autocomplete="current-password" required>'
        '<p><button type="submit">Sign in</button></p>'
        "</form>"
    )
    return _page("Connected apps", body)


def _when(value: datetime | None) -> str:
    return value.strftime("%d %b %Y, %H:%M UTC") if value else "never"


def manage_page(session: Session, apps: list[ConnectedApp], notice: str = "") -> str:
    """The user's approved apps, each with what it may do, its last use and a revoke button
    (one small form per app, each with the session's form token)."""
    told = f'<p role="status"><strong>{escape(notice)}</strong></p>' if notice else ""
    rows = "".join(
        "<li><h2>{name}</h2><p>Approved {approved}; last used {used}.</p>"
        "<p>It may:</p><ul>{scopes}</ul>"
        '<form method="post" action="/auth/manage/revoke">'
        '<input type="hidden" name="form_token" value="{token}">'
        '<input type="hidden" name="grant" value="{grant}">'
        '<button type="submit">Stop {name} reaching my record</button></form></li>'.format(
            name=escape(app.client_name),
            approved=_when(app.approved),
            used=_when(app.last_used),
            scopes="".join(
                f"<li>{escape(IDENTITY_WORDS.get(s) or _refresh_words(s) or describe(s))}</li>"
                for s in app.scope.split()
            ),
            token=escape(session.form_token),
            grant=escape(app.grant_id),
        )
        for app in apps
    )
    listing = f'<ul class="apps">{rows}</ul>' if rows else "<p>No app can reach your record.</p>"
    body = (
        f"<h1>Connected apps</h1><p>Signed in as <strong>{escape(session.name)}</strong>.</p>"
        f"{told}{listing}"
        '<p class="note">Stopping an app takes effect at once: its access and refresh '
        "tokens stop working. To use it again, connect it again from the app.</p>"
        '<form method="post" action="/auth/manage/logout">'
        f'<input type="hidden" name="form_token" value="{escape(session.form_token)}">'
        '<button type="submit">Sign out</button></form>'
    )
    return _page("Connected apps", body)


def _refresh_words(word: str) -> str:
    return {
        "offline_access": "Keep access when you are not using it, until you stop it",
        "online_access": "Stay connected while you use it",
    }.get(word, "")
