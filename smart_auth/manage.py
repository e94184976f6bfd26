"""``/auth/manage``: the apps a person approved, with their scopes and last use, and
revoking one (issue 16 item 4; docs/smart.md, "Connected apps").

The page has its own short sign-in (the login rules and lockout of smart_auth/accounts.py):
a random session secret in a cookie scoped to ``/auth/manage``, stored hashed with an
expiry, and a per-session form token against cross-site posts. Revoking goes through
``AuthStore.revoke_grant``: the grant, its access and refresh tokens are marked revoked and
the revocation feed tells every process's token cache at once (smart_auth/revocations.py),
so the app's next call with either token fails.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from smart_auth import accounts
from smart_auth.store import digest, expired, later, now

if TYPE_CHECKING:
    from smart_auth.server import AuthServer

SESSION_S = 15 * 60  # the management session: a quarter of an hour, then sign in again


@dataclass(frozen=True)
class Session:
    username: str
    name: str
    form_token: str


@dataclass(frozen=True)
class ConnectedApp:
    grant_id: str
    client_name: str
    scope: str
    approved: datetime | None
    last_used: datetime | None


def sign_in(
    server: AuthServer, username: str, password: str, context: dict[str, Any]
) -> tuple[str, Session]:
    """(the cookie secret, the session); raises accounts.LoginFailed like the login page."""
    account = accounts.authenticate(
        server.store,
        server.policy,
        username,
        password,
        context={**context, "client_id": "auth-manage"},
    )
    secret = secrets.token_urlsafe(32)
    session = Session(account.username, account.name, secrets.token_urlsafe(24))
    server.store.manage.insert_one(
        {
            "_id": digest(secret),
            "username": session.username,
            "name": session.name,
            "form_token": session.form_token,
            "expires_at": later(SESSION_S),
        }
    )
    return secret, session


def session(server: AuthServer, secret: str | None) -> Session | None:
    if not secret:
        return None
    doc = server.store.manage.find_one({"_id": digest(secret)})
    if doc is None or expired(doc):
        return None
    return Session(doc["username"], str(doc.get("name") or doc["username"]), doc["form_token"])


def sign_out(server: AuthServer, secret: str | None) -> None:
    if secret:
        server.store.manage.delete_one({"_id": digest(secret)})


def connected_apps(server: AuthServer, username: str) -> list[ConnectedApp]:
    """The user's grants that still stand, newest use first."""
    grants = [
        g
        for g in server.store.grants.find({"username": username})  # the one indexed field
        if not g.get("revoked")
    ]
    ids = sorted({g["client_id"] for g in grants})
    names = {
        c["_id"]: c.get("name", c["_id"])
        for c in server.store.clients.find({"_id": {"$in": ids}}, {"name": 1})
    }
    apps = [
        ConnectedApp(
            g["_id"],
            str(names.get(g["client_id"]) or g["client_id"]),
            g.get("scope", ""),
            g.get("created"),
            g.get("last_used") or g.get("created"),
        )
        for g in grants
    ]
    return sorted(apps, key=lambda a: a.last_used or datetime.min, reverse=True)


def revoke(server: AuthServer, username: str, grant_id: str) -> bool:
    """Revoke one of the user's grants; False when it is not theirs (or not known)."""
    grant = server.store.grants.find_one({"_id": grant_id}, {"username": 1, "revoked": 1})
    if grant is None or grant.get("username") != username:
        return False
    server.store.revoke_grant(grant_id, "revoked by the user on /auth/manage")
    return True


def touch(server: AuthServer, grant_id: str) -> None:
    """Record a grant's last use (a token issued or first verified in this process)."""
    if grant_id:
        server.store.grants.update_one({"_id": grant_id}, {"$set": {"last_used": now()}})
