"""The interactive part of the authorization code flow: authorize -> login -> consent.

SMART App Launch 2.2, "Obtain authorization code": the request is validated first (client,
exact redirect URI, PKCE, ``aud``, ``state``, ``launch``); a request whose client or
redirect URI is bad gets an error page and never a redirect (RFC 6749 section 4.1.2.1).
The pending request lives in MongoDB under a random id, bound to the browser by a cookie
(its hash is stored), so any server process can continue it and a forged form post from
another site finds nothing (login CSRF, RFC 6749 section 10.12).

The consent offer is the requested scope cut down by the client's registration, then by
the login level's ceiling (``profiles/access/login_levels.json``); the user may untick
resource types and offline access, and chooses the patient among those they may act for.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from authlib.oauth2.rfc6749 import OAuth2Error

from smart_auth import accounts, linking
from smart_auth import scopes as sc
from smart_auth.models import GrantSubject
from smart_auth.oauth import OAuthResponse, SmartRequest
from smart_auth.store import digest, expired, later, now

log = logging.getLogger("smart_auth")

if TYPE_CHECKING:
    from smart_auth.server import AuthServer

ID_RE = re.compile(r"[A-Za-z0-9\-.]{1,64}")
REFRESH_WORDS = ("offline_access", "online_access")
EXPIRED = "This sign-in request has expired or was already used. Return to the app and start again."


@dataclass
class LoginView:
    tx: str
    client_name: str
    error: str | None = None
    card_simulation: bool = True
    card_certificate: bool = False


@dataclass
class ConsentView:
    tx: str
    client_name: str
    user_name: str
    level_label: str
    resource_scopes: list[str]
    identity: list[str]
    refresh: str | None  # offline_access | online_access | None
    patients: list[str]
    patient_names: dict[str, str]
    patient_free_text: bool
    withheld: list[str]
    # A clinician's care-team patients: a search box narrows them (`find`, `shown_patients`).
    searchable: bool = False
    find: str = ""
    shown_patients: list[str] | None = None


@dataclass
class FlowResult:
    kind: str  # login | verify | consent | error | redirect
    view: LoginView | ConsentView | linking.VerifyView | None = None
    location: str | None = None
    message: str = ""
    status: int = 200
    new_cookie: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _error(message: str, status: int = 400) -> FlowResult:
    return FlowResult("error", message=message, status=status)


def _from_oauth_error(error: OAuth2Error) -> FlowResult:
    if error.redirect_uri:
        status, _, headers = error()
        response = OAuthResponse(status, "", headers)
        return FlowResult("redirect", location=response.location, status=302)
    return _error(error.description or error.error or "invalid request")


# The characters RFC 6749 Appendix A allows: response types are words of letters, digits
# and "_" (A.3); a scope is NQCHAR words (A.4); a redirect URI is a URI (A.6, RFC 3986
# section 2), which has no space, quote, angle bracket, backslash, caret, backtick or brace.
_CHECKED_CHARS = {
    "response_type": re.compile(r"^[A-Za-z0-9_]+( [A-Za-z0-9_]+)*$"),
    "scope": re.compile(r"^[\x21\x23-\x5B\x5D-\x7E ]*$"),
    "redirect_uri": re.compile(r"^[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+$"),
}


def malformed_parameter(req: SmartRequest) -> str | None:
    """The first authorize parameter with characters its grammar forbids. They are refused
    here, on an error page: authlib quotes them into an error description, which may not
    hold them (RFC 6749 section 4.1.2.1), and raises instead of answering."""
    data = req.payload.data
    for name, grammar in _CHECKED_CHARS.items():
        value = data.get(name)
        if isinstance(value, str) and value and not grammar.match(value):
            return name
    return None


def start(server: AuthServer, req: SmartRequest, cookie_secret: str | None) -> FlowResult:
    """Validate an authorization request and open a pending login."""
    bad = malformed_parameter(req)
    if bad is not None:
        return _error(f"The authorization request's {bad} has characters it may not contain.")
    try:
        grant = server.oauth.get_consent_grant(req)
    except OAuth2Error as error:
        return _from_oauth_error(error)
    except ValueError:
        # authlib refusing to quote a value into an error description: still the client's
        # malformed request, answered on the error page (never a redirect).
        log.warning("authorization request refused: a parameter authlib cannot quote")
        return _error("The authorization request has a parameter with forbidden characters.")
    data = req.payload.data
    launch = server.launches.find(data["launch"]) if data.get("launch") else None
    secret = cookie_secret or secrets.token_urlsafe(32)
    tx = secrets.token_urlsafe(24)
    client = req.client
    server.store.requests.insert_one(
        {
            "_id": tx,
            "csrf": digest(secret),
            "method": req.method,
            "params": [[k, v] for k, values in req.payload.datalist.items() for v in values],
            "client_id": client.client_id,
            "client_name": client.name,
            "redirect_uri": grant.redirect_uri,
            "requested_scope": req.scope or "",
            "launch": None
            if launch is None
            else {
                "patient": launch.patient,
                "encounter": launch.encounter,
                "need_patient_banner": launch.need_patient_banner,
            },
            "expires_at": later(server.config.login_request_lifetime_s),
        }
    )
    return FlowResult(
        "login",
        LoginView(
            tx,
            client.name,
            card_simulation=not server.config.production,
            card_certificate=bool(server.config.client_cert_header),
        ),
        new_cookie=None if cookie_secret else secret,
    )


def _pending(server: AuthServer, tx: str, secret: str | None) -> dict[str, Any] | None:
    if not tx or not secret:
        return None
    doc = server.store.requests.find_one({"_id": tx, "csrf": digest(secret)})
    return None if expired(doc) else doc


def login(
    server: AuthServer,
    tx: str,
    secret: str | None,
    username: str,
    password: str,
    method: str,
    context: dict[str, Any],
) -> FlowResult:
    doc = _pending(server, tx, secret)
    if doc is None:
        return _error(EXPIRED)
    if method not in accounts.METHODS:
        method = "auto"
    ctx = {**context, "client_id": doc["client_id"]}
    try:
        account = accounts.authenticate(
            server.store, server.policy, username, password, method=method, context=ctx
        )
    except accounts.LoginFailed as failed:
        return FlowResult("login", LoginView(tx, doc["client_name"], str(failed)), status=401)
    if not account.fhir_user:
        # A DS Logon account not yet linked to a record: verify identity first (linking.py).
        server.store.requests.update_one(
            {"_id": doc["_id"]}, {"$set": {"verify": account.username}}
        )
        return FlowResult("verify", linking.VerifyView(tx, doc["client_name"]))
    return _offer(server, doc, account)


@dataclass
class Verification:
    """A verification attempt under way: the pending request, the account (its lockout
    slot taken) and what was entered; or the answer already (`result`)."""

    result: FlowResult | None = None
    doc: dict[str, Any] | None = None
    user: dict[str, Any] | None = None
    claim: linking.IdentityClaim | None = None
    ctx: dict[str, Any] = field(default_factory=dict)


def verify_begin(
    server: AuthServer, tx: str, secret: str | None, form: dict[str, str], context: dict[str, Any]
) -> Verification:
    """Check the attempt is complete and take a lockout slot for it."""
    doc = _pending(server, tx, secret)
    if doc is None or not doc.get("verify"):
        return Verification(_error(EXPIRED))
    username = str(doc["verify"])
    ctx = {**context, "client_id": doc["client_id"], "username": username, "method": "verify"}
    current = server.store.users.find_one({"_id": username}) or {}
    claim = linking.claim_of(str(current.get("name") or ""), form)
    if claim is None:
        view = linking.VerifyView(tx, doc["client_name"], error=linking.INCOMPLETE)
        return Verification(FlowResult("verify", view, status=400))
    user = linking.take_slot(server, username)
    if user is None or not linking.unlinked(user):
        # Locked (or linked meanwhile): the same page as a record not found.
        accounts.record_event(
            server.store, "failure", account=True, action="link", reason="locked", **ctx
        )
        return Verification(_not_found(doc))
    return Verification(doc=doc, user=user, claim=claim, ctx=ctx)


def verify_end(server: AuthServer, attempt: Verification, patient: str | None) -> FlowResult:
    """Link on a certain match and go on to the consent page; else the not-found page."""
    doc, user = attempt.doc, attempt.user
    assert doc is not None and user is not None
    username = str(user["_id"])
    if patient is None:
        linking.failed(server, user, "no-certain-match", attempt.ctx)
        return _not_found(doc)
    if not linking.link(server, username, patient, attempt.ctx):
        linking.failed(server, user, "already-linked", attempt.ctx)
        return _not_found(doc)
    server.store.requests.update_one({"_id": doc["_id"]}, {"$unset": {"verify": ""}})
    linked = server.store.users.find_one({"_id": username})
    assert linked is not None
    return _offer(server, doc, accounts.Account.from_doc(linked))


def _not_found(doc: dict[str, Any]) -> FlowResult:
    view = linking.VerifyView(str(doc["_id"]), doc["client_name"], not_found=True)
    return FlowResult("verify", view, status=404)


def _offer(server: AuthServer, doc: dict[str, Any], account: accounts.Account) -> FlowResult:
    level = server.policy.level(account.level)
    words = sc.split(doc["requested_scope"])
    requested = [s for s in sc.parse_scopes(words) if s.context != "system"]
    capped = level.cap(requested)
    withheld = [str(s) for s in requested if not any(sc.covers(c, s) for c in capped)]
    identity = [w for w in words if _is_identity(w)]
    refresh = next((w for w in REFRESH_WORDS if w in words), None)
    needs_patient = "launch/patient" in words or any(s.context == "patient" for s in capped)
    launch = doc.get("launch")
    choices: list[str] = []
    free_text = False
    if launch and launch.get("patient"):
        ref = f"Patient/{launch['patient']}"
        allowed = level.patient_choices(account.fhir_user, account.acts_for)
        if account.fhir_user.startswith("Patient/") and ref not in allowed:
            return _error("You may not open this app for the patient chosen by the EHR.", 403)
        choices = [ref]
    elif needs_patient:
        choices = level.patient_choices(account.fhir_user, account.acts_for)
        clinician = not choices and account.fhir_user.startswith("Practitioner/")
        if clinician and server.care_team_resolver is not None:
            choices = _care_team_choices(server, account.fhir_user)
            if not choices:
                return _error("None of your care teams has a patient you could open.", 403)
        else:
            free_text = clinician
        if not choices and not free_text:
            return _error("There is no patient record you may open with this app.", 403)
    resource_scopes = [str(s) for s in capped]
    offer: dict[str, Any] = {
        "account": {
            "username": account.username,
            "level": account.level,
            "fhir_user": account.fhir_user,
            "acts_for": list(account.acts_for),
            "name": account.name,
        },
        "auth_time": int(now().timestamp()),
        "resource_scopes": resource_scopes,
        "identity": identity,
        "refresh": refresh,
        "patients": choices,
        "patient_free_text": free_text,
    }
    offer["level_label"] = level.label
    offer["withheld"] = withheld
    offer["searchable"] = account.fhir_user.startswith("Practitioner/") and not (
        launch and launch.get("patient")
    )
    # Pairs, not a document: a patient id may hold a "." (a field-name path in MongoDB).
    offer["patient_names"] = [[k, v] for k, v in server.patient_names(choices).items()]
    server.store.requests.update_one({"_id": doc["_id"]}, {"$set": {"offer": offer}})
    return FlowResult("consent", _consent_view(doc, offer))


def _consent_view(doc: dict[str, Any], offer: dict[str, Any], find: str = "") -> ConsentView:
    names: dict[str, str] = dict(offer.get("patient_names") or {})
    patients: list[str] = list(offer["patients"])
    shown = None
    if find.strip():
        words = find.lower().split()
        shown = [p for p in patients if all(w in names.get(p, p).lower() for w in words)]
    return ConsentView(
        tx=doc["_id"],
        client_name=doc["client_name"],
        user_name=offer["account"]["name"],
        level_label=offer.get("level_label", ""),
        resource_scopes=list(offer["resource_scopes"]),
        identity=list(offer["identity"]),
        refresh=offer["refresh"],
        patients=patients,
        patient_names=names,
        patient_free_text=offer["patient_free_text"],
        withheld=list(offer.get("withheld") or []),
        searchable=bool(offer.get("searchable")) and len(patients) > 1,
        find=find,
        shown_patients=shown,
    )


def _care_team_choices(server: AuthServer, practitioner: str) -> list[str]:
    """The patients of the clinician's care teams, sorted by name for the picker."""
    resolver = server.care_team_resolver
    try:
        refs = list(resolver(practitioner)) if resolver else []
    except Exception:
        log.exception("care team look-up failed")
        return []
    names = server.patient_names(refs)
    return sorted(refs, key=lambda r: str(names.get(r) or r).lower())


def search_patients(server: AuthServer, tx: str, secret: str | None, find: str) -> FlowResult:
    """The consent page again, its patient list narrowed to the names matching `find`
    (the pending request stays open: nothing is granted or consumed)."""
    doc = _pending(server, tx, secret)
    if doc is None or "offer" not in doc:
        return _error(EXPIRED)
    return FlowResult("consent", _consent_view(doc, doc["offer"], find[:100]))


def _is_identity(word: str) -> bool:
    """``openid``, ``fhirUser``, ``launch/patient``...: granted with the rest, not ticked."""
    if word in REFRESH_WORDS:
        return False
    try:
        return sc.parse_scope(word) is None
    except sc.InvalidScope:
        return False


def consent(
    server: AuthServer,
    tx: str,
    secret: str | None,
    *,
    deny: bool,
    chosen_scopes: list[str],
    patient: str | None,
) -> FlowResult:
    if not tx or not secret:
        return _error(EXPIRED)
    # Claimed atomically: a double submit or a second process finds nothing.
    doc = server.store.requests.find_one_and_delete(
        {"_id": tx, "csrf": digest(secret), "offer": {"$exists": True}}
    )
    if doc is None or expired(doc):
        return _error(EXPIRED)
    req = _rebuild(server, doc)
    state = req.payload.data.get("state")
    if deny:
        return _deny(doc["redirect_uri"], state)
    offer = doc["offer"]
    chosen = set(chosen_scopes)
    granted = [s for s in offer["resource_scopes"] if s in chosen]
    words = list(offer["identity"]) + granted
    if offer["refresh"] and offer["refresh"] in chosen:
        words.append(offer["refresh"])
    patient_ok, patient_ref = _patient(offer, patient)
    if not patient_ok:
        return _error("Choose one of the listed patients.")
    launch = doc.get("launch") or {}
    account = offer["account"]
    scope = " ".join(dict.fromkeys(words))
    subject = GrantSubject(
        username=account["username"],
        fhir_user=account["fhir_user"],
        level=account["level"],
        acts_for=tuple(account["acts_for"]),
        patient=patient_ref.removeprefix("Patient/") if patient_ref else None,
        encounter=launch.get("encounter"),
        need_patient_banner=bool(launch.get("need_patient_banner", True)) if launch else True,
        auth_time=offer["auth_time"],
        nonce=req.payload.data.get("nonce"),
        grant_id=server.new_grant(doc["client_id"], account["username"], scope),
    )
    req.granted_scope = scope
    try:
        grant = server.oauth.get_consent_grant(req)
    except OAuth2Error as error:
        return _from_oauth_error(error)
    response: OAuthResponse = server.oauth.create_authorization_response(
        req, grant_user=subject, grant=grant
    )
    return FlowResult("redirect", location=response.location, status=302)


def _patient(offer: dict[str, Any], chosen: str | None) -> tuple[bool, str | None]:
    """(valid, the chosen ``Patient/<id>`` or None when no patient context is needed)."""
    patients: list[str] = offer["patients"]
    if offer["patient_free_text"]:
        value = (chosen or "").strip().removeprefix("Patient/")
        return (True, f"Patient/{value}") if ID_RE.fullmatch(value) else (False, None)
    if not patients:
        return True, None
    if chosen is None:  # the first choice is preselected: the user themself
        return True, patients[0]
    return (True, chosen) if chosen in patients else (False, None)


def _deny(redirect_uri: str, state: str | None) -> FlowResult:
    from authlib.common.urls import add_params_to_uri

    params = [("error", "access_denied"), ("error_description", "The user denied access.")]
    if state:
        params.append(("state", state))
    return FlowResult("redirect", location=add_params_to_uri(redirect_uri, params), status=302)


def _rebuild(server: AuthServer, doc: dict[str, Any]) -> SmartRequest:
    pairs = [(k, v) for k, v in doc["params"]]
    uri = server.config.url("/auth/authorize")
    if doc["method"] == "POST":
        return SmartRequest("POST", uri, {}, form=pairs)
    return SmartRequest("GET", uri, {}, query=pairs)


def card_login(
    server: AuthServer, tx: str, secret: str | None, subject: str | None, context: dict[str, Any]
) -> FlowResult:
    """Production CAC/PIV: the proxy-verified certificate subject names the account."""
    doc = _pending(server, tx, secret)
    if doc is None:
        return _error(EXPIRED)
    ctx = {**context, "client_id": doc["client_id"], "method": "certificate"}
    account = accounts.find_by_certificate(server.store, subject) if subject else None
    if account is None:
        accounts.record_event(
            server.store, "failure", account=False, reason="certificate", subject=subject, **ctx
        )
        return FlowResult(
            "login", LoginView(tx, doc["client_name"], accounts.GENERIC_FAILURE), status=401
        )
    accounts.record_event(
        server.store,
        "success",
        account=True,
        username=account.username,
        level=account.level,
        fhirUser=account.fhir_user,
        **ctx,
    )
    return _offer(server, doc, account)
