"""Account linking, DEERS-style: a DS Logon account not yet linked to a Patient (an empty
``fhirUser``) verifies its holder's identity after signing in, before the consent page.

The holder gives their date of birth and the last four digits of their SSN, or their DoD ID
(EDIPI). The FHIR server's verifier (``AuthServer.identity_verifier``, set by the app:
fhir_server/exchange/identity/linking.py) matches them, with the account's name, by the
``Patient/$match`` rules and answers the one Patient matched at ``certain`` grade, or None.
A match links the account (its ``fhirUser``); anything else answers one page, "record not
found, check DEERS", whatever differed. Every attempt takes a lockout slot first, exactly as
a password attempt does (accounts.py), so verification answers cannot be guessed either;
every attempt is recorded in ``auth_events`` (and so audited).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from smart_auth import accounts
from smart_auth.store import later, now

if TYPE_CHECKING:
    from smart_auth.server import AuthServer

LINKS = "auth_account_links"  # one document per linked Patient: at most one account each
NOT_FOUND = (
    "We could not find your health record with the information you entered. Check that your "
    "details in DEERS (the Defense Enrollment Eligibility Reporting System) are up to date "
    "- a RAPIDS ID card office or the DMDC support center can help - then try again."
)
INCOMPLETE = (
    "Enter your date of birth and the last four digits of your Social Security number, "
    "or your 10-digit DoD ID number."
)
_FOUR = re.compile(r"^[0-9]{4}$")
_EDIPI = re.compile(r"^[0-9]{10}$")


@dataclass(frozen=True)
class IdentityClaim:
    """What the account holder entered, with the account's own name."""

    name: str
    birth_date: str | None
    ssn_last4: str | None
    edipi: str | None


IdentityVerifier = Callable[[IdentityClaim], Awaitable[str | None]]


@dataclass
class VerifyView:
    tx: str
    client_name: str
    error: str | None = None
    not_found: bool = False


def claim_of(name: str, form: dict[str, str]) -> IdentityClaim | None:
    """The entered answers, or None when they are not one complete set."""
    birth = (form.get("birthdate") or "").strip()
    four = (form.get("ssn_last4") or "").strip()
    edipi = (form.get("edipi") or "").strip()
    try:
        birth_ok = bool(birth) and date.fromisoformat(birth) <= date.today()
    except ValueError:
        birth_ok = False
    if edipi and _EDIPI.match(edipi):
        return IdentityClaim(name, birth if birth_ok else None, None, edipi)
    if birth_ok and _FOUR.match(four):
        return IdentityClaim(name, birth, four, None)
    return None


def unlinked(doc: dict[str, Any]) -> bool:
    return not doc.get("fhirUser")


def take_slot(server: AuthServer, username: str) -> dict[str, Any] | None:
    """One of the account's lockout slots, atomically (accounts.authenticate does the
    same); None when the account is locked or its slots are taken."""
    limit = server.policy.lockout.max_failures
    at = now()
    doc: dict[str, Any] | None = server.store.users.find_one_and_update(
        {
            "_id": username,
            "$and": [
                {"$or": [{"failures": {"$exists": False}}, {"failures": {"$lt": limit}}]},
                {"$or": [{"locked_until": {"$exists": False}}, {"locked_until": {"$lte": at}}]},
            ],
        },
        {"$inc": {"failures": 1}},
        return_document=ReturnDocument.AFTER,
    )
    return doc


def link(server: AuthServer, username: str, patient: str, ctx: dict[str, Any]) -> bool:
    """Link the account to `patient`: False when that Patient is linked to another account
    already, or the account was linked meanwhile (a double submit)."""
    store = server.store
    links = store.db[LINKS]
    # Accounts linked before this table existed (the seeded ones) hold their Patient too.
    other = store.users.find_one({"fhirUser": patient, "_id": {"$ne": username}}, {"_id": 1})
    if other is not None:
        return False
    try:
        links.insert_one({"_id": patient, "username": username, "at": now()})
    except DuplicateKeyError:
        held = links.find_one({"_id": patient})
        if held is None or held.get("username") != username:
            return False
    r = store.users.update_one(
        {"_id": username, "fhirUser": ""},
        {"$set": {"fhirUser": patient, "failures": 0, "linked_at": now()}},
    )
    if r.matched_count != 1:
        return False
    accounts.record_event(store, "success", account=True, action="link", fhirUser=patient, **ctx)
    return True


def failed(server: AuthServer, doc: dict[str, Any], reason: str, ctx: dict[str, Any]) -> None:
    """Record a failed attempt (its slot stays counted); lock the account at the limit."""
    store = server.store
    accounts.record_event(store, "failure", account=True, action="link", reason=reason, **ctx)
    if doc.get("failures", 0) >= server.policy.lockout.max_failures:
        until = later(server.policy.lockout.lock_seconds)
        store.users.update_one(
            {"_id": doc["_id"]}, {"$set": {"locked_until": until, "failures": 0}}
        )
        store.revoke_account(str(doc["_id"]), "account locked")
        accounts.record_event(
            store, "lockout", account=True, action="link", locked_until=until, **ctx
        )
