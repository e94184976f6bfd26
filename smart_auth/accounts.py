"""Login accounts: argon2 password check, lockout, and the ``auth_events`` record.

DESIGN.md, "Access policy": after ``max_failures`` failed logins the account is locked for
``lock_days``; the answer never tells which part was wrong or whether the account exists
(OWASP ASVS 4.0.3, V2.2.1 and V3.2; NIST SP 800-63B section 5.2.2, rate limiting). Every
success, failure and lockout is recorded in ``auth_events``; the reason stays there and is
never shown. Unknown usernames cost the same argon2 work as known ones.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pymongo import ReturnDocument

from smart_auth.policy import AccessPolicy
from smart_auth.store import AuthStore, later, now

# The sign-in kinds a login form offers; "auto" uses the account's own kind.
METHODS = ("auto", "dslogon", "cac", "piv")
LEVEL_METHOD = {
    "dslogon-basic": "dslogon",
    "dslogon-premium": "dslogon",
    "managed": "dslogon",
    "cac": "cac",
    "piv": "piv",
}
GENERIC_FAILURE = "The username or password is incorrect, or the account cannot sign in now."

log = logging.getLogger("smart_auth")
_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash("not-a-password: equalises timing for unknown accounts")


@dataclass(frozen=True)
class Account:
    username: str
    level: str  # dslogon-basic | dslogon-premium | managed | cac | piv
    fhir_user: str
    acts_for: tuple[str, ...]
    name: str

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Account:
        return cls(
            username=doc["_id"],
            level=doc["login"],
            fhir_user=doc["fhirUser"],
            acts_for=tuple(doc.get("acts_for", [])),
            name=doc.get("name", doc["_id"]),
        )


class LoginFailed(Exception):
    """Any failed login; the message is the same whatever went wrong."""

    def __init__(self) -> None:
        super().__init__(GENERIC_FAILURE)


def normalise(username: str) -> str:
    return username.strip().lower()[:256]


def create_account(
    store: AuthStore,
    *,
    username: str,
    password: str,
    level: str,
    fhir_user: str,
    acts_for: list[str] | tuple[str, ...] = (),
    name: str = "",
    replace_password: bool = False,
) -> None:
    """Create an account, or update its profile (the password only when asked)."""
    if level not in LEVEL_METHOD:
        raise ValueError(f"unknown login level {level!r}")
    key = normalise(username)
    profile = {
        "login": level,
        "fhirUser": fhir_user,
        "acts_for": list(acts_for),
        "name": name or key,
    }
    update: dict[str, Any] = {"$set": profile, "$setOnInsert": {"failures": 0, "created": now()}}
    if not fhir_user:
        # Not yet linked: a link made since (linking.py) survives re-seeding.
        del profile["fhirUser"]
        update["$setOnInsert"]["fhirUser"] = ""
    if replace_password:
        update["$set"] = {**profile, "password_hash": _hasher.hash(password)}
    elif store.users.find_one({"_id": key}, projection={"_id": 1}) is None:
        update["$setOnInsert"]["password_hash"] = _hasher.hash(password)
    store.users.update_one({"_id": key}, update, upsert=True)


def seed_accounts(store: AuthStore, path: Path, *, production: bool) -> int:
    """Create the development logins of ``seed_data/logins.json``; refused in production."""
    if production:
        raise RuntimeError("refusing to create the development logins in production mode")
    logins = json.loads(path.read_text(encoding="utf-8"))["logins"]
    for entry in logins:
        create_account(
            store,
            username=entry["username"],
            password=entry["password"],
            level=entry["login"],
            fhir_user=entry["fhirUser"],
            acts_for=entry.get("acts_for", []),
            name=entry.get("name", ""),
        )
    # Accounts not yet linked to a Patient (no fhirUser): they verify their identity after
    # signing in (linking.py).
    unlinked = json.loads(path.read_text(encoding="utf-8")).get("unlinked", [])
    for entry in unlinked:
        create_account(
            store,
            username=entry["username"],
            password=entry["password"],
            level=entry["login"],
            fhir_user="",
            name=entry.get("name", ""),
        )
    return len(logins) + len(unlinked)


def record_event(store: AuthStore, outcome: str, **fields: Any) -> None:
    """One row per login success, failure or lockout; the FHIR server's audit sink (when
    installed) also makes each an AuditEvent (fhir_server/access/audit.py)."""
    row = {"at": now(), "type": "login", "outcome": outcome, **fields}
    store.events.insert_one(row)
    if store.on_event is not None:
        try:
            store.on_event(row)
        except Exception:  # the login goes on; the row above is kept
            log.exception("handing a login event to the audit failed")


def authenticate(
    store: AuthStore,
    policy: AccessPolicy,
    username: str,
    password: str,
    *,
    method: str = "auto",
    context: dict[str, Any] | None = None,
) -> Account:
    """Check a username and password; raise :class:`LoginFailed` on any failure.

    Each attempt first takes one of the account's ``max_failures`` slots in one atomic
    update (counted as a failure until it proves right), and only an attempt holding a slot
    has its password checked: however many guesses arrive at once, no more than the limit
    are ever evaluated, and a right password after them meets the lock. Every refusal
    still hashes the given password once (against a dummy hash when there is no account
    to check), so no path answers measurably faster (DESIGN.md, "Lockout")."""
    key = normalise(username)
    ctx = {"username": key, "method": method, **(context or {})}
    limit = policy.lockout.max_failures
    at = now()
    doc = (
        store.users.find_one_and_update(
            {
                "_id": key,
                "$and": [
                    {"$or": [{"failures": {"$exists": False}}, {"failures": {"$lt": limit}}]},
                    {"$or": [{"locked_until": {"$exists": False}}, {"locked_until": {"$lte": at}}]},
                ],
            },
            {"$inc": {"failures": 1}},
            return_document=ReturnDocument.AFTER,
        )
        if key
        else None
    )
    if doc is None:
        return _refuse(store, key, password, ctx)
    # Failures on a real account name it in the audit (its owner sees them in their log).
    ctx = {**ctx, "level": doc.get("login"), "fhirUser": doc.get("fhirUser")}
    password_ok = _verify(doc.get("password_hash", _DUMMY_HASH), password)
    own_method = LEVEL_METHOD.get(doc["login"])
    method_ok = method in ("auto", own_method)
    if password_ok and method_ok:
        store.users.update_one(
            {"_id": key},
            {"$set": {"failures": 0, "last_login": now()}, "$unset": {"locked_until": ""}},
        )
        account = Account.from_doc(doc)
        record_event(store, "success", account=True, **ctx)
        return account
    reason = "bad-password" if not password_ok else "wrong-method"
    record_event(store, "failure", account=True, reason=reason, **ctx)
    if doc.get("failures", 0) >= limit:
        until = later(policy.lockout.lock_seconds)
        store.users.update_one({"_id": key}, {"$set": {"locked_until": until, "failures": 0}})
        # Someone is guessing the password: the account's existing grants end too, for
        # every app and in every process (docs/smart.md, "Token cache").
        store.revoke_account(key, "account locked")
        record_event(store, "lockout", account=True, locked_until=until, **ctx)
    raise LoginFailed()


def _refuse(store: AuthStore, key: str, password: str, ctx: dict[str, Any]) -> Account:
    """No slot: an unknown account, a locked one, or one whose last slots are taken by
    attempts still running. The password is hashed anyway (equal timing) and never
    compared with the account's."""
    doc = store.users.find_one({"_id": key}, {"login": 1, "fhirUser": 1}) if key else None
    verify_dummy(password)
    if doc is None:
        record_event(store, "failure", account=False, reason="unknown-user", **ctx)
    else:
        ctx = {**ctx, "level": doc.get("login"), "fhirUser": doc.get("fhirUser")}
        record_event(store, "failure", account=True, reason="locked", **ctx)
    raise LoginFailed()


def verify_dummy(password: str) -> None:
    """An argon2 verification that always fails, as costly as a real one."""
    _verify(_DUMMY_HASH, password)


def find_by_certificate(store: AuthStore, subject: str) -> Account | None:
    """The CAC or PIV account whose registered certificate subject matches."""
    doc = store.users.find_one({"cert_subjects": subject, "login": {"$in": ["cac", "piv"]}})
    return Account.from_doc(doc) if doc else None


def _verify(password_hash: str, password: str) -> bool:
    try:
        return bool(_hasher.verify(password_hash, password))
    except (VerificationError, InvalidHashError):
        return False
