"""The values that travel through a grant: who approved what, for which patient."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from smart_auth.scopes import Scope


@dataclass(frozen=True)
class GrantSubject:
    """The resource owner of a grant and its launch context (authlib's "user").

    Built at consent, stored with the code, copied into every refresh-token record, so a
    refreshed token carries the same context (SMART App Launch 2.2, "Launch context
    arrives with your access_token").
    """

    username: str
    fhir_user: str
    level: str  # the login level, sent as ``acr``
    acts_for: tuple[str, ...] = ()
    patient: str | None = None  # a bare Patient id, as the token response carries it
    encounter: str | None = None
    need_patient_banner: bool = True
    auth_time: int = 0
    nonce: str | None = None
    grant_id: str = ""

    def get_user_id(self) -> str:
        return self.username

    def to_doc(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["acts_for"] = list(self.acts_for)
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> GrantSubject:
        values = {k: doc[k] for k in cls.__dataclass_fields__ if k in doc}
        values["acts_for"] = tuple(values.get("acts_for", ()))
        return cls(**values)


@dataclass(frozen=True)
class AuthContext:
    """What a validated access token says; the FHIR server builds its access policy on it.

    ``patient`` is the launch-context Patient id (bare, no ``Patient/``); ``acr`` the login
    level (``None`` for backend services); ``acts_for`` the ``Patient/<id>`` references the
    user may act for; ``scopes`` the parsed resource scopes; ``scope`` the raw granted
    string (with ``openid``, ``launch/patient``...).
    """

    subject: str
    client_id: str
    scopes: tuple[Scope, ...]
    scope: str
    token_id: str
    grant_id: str
    expires_at: datetime
    fhir_user: str | None = None
    patient: str | None = None
    encounter: str | None = None
    acr: str | None = None
    acts_for: tuple[str, ...] = field(default_factory=tuple)

    @property
    def is_system(self) -> bool:
        """A backend service token (client_credentials): no user, system/ scopes."""
        return self.fhir_user is None
