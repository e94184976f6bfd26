"""EHR launch contexts (SMART App Launch 2.2, "EHR Launch": the ``launch`` parameter).

The EHR (or the development stand-in at ``/auth/ehr-launch``) records the context, gets an
opaque ``launch`` id, and opens the app's launch URL with ``iss`` and ``launch``; the app
passes ``launch`` back to ``/auth/authorize`` and the context comes back with the token.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from smart_auth.store import AuthStore, expired, later, now

DEFAULT_LIFETIME_S = 3600


@dataclass(frozen=True)
class LaunchContext:
    launch_id: str
    patient: str | None
    encounter: str | None
    need_patient_banner: bool


class Launches:
    def __init__(self, store: AuthStore) -> None:
        self.store = store

    def create(
        self,
        *,
        patient: str | None,
        encounter: str | None = None,
        need_patient_banner: bool = False,
        lifetime_s: int = DEFAULT_LIFETIME_S,
    ) -> str:
        """Record a context; ``patient``/``encounter`` are bare ids. Returns the launch id."""
        launch_id = secrets.token_urlsafe(24)
        self.store.launch.insert_one(
            {
                "_id": launch_id,
                "patient": patient,
                "encounter": encounter,
                "need_patient_banner": need_patient_banner,
                "created": now(),
                "expires_at": later(lifetime_s),
            }
        )
        return launch_id

    def find(self, launch_id: str) -> LaunchContext | None:
        doc: dict[str, Any] | None = self.store.launch.find_one({"_id": launch_id})
        if doc is None or expired(doc):
            return None
        return LaunchContext(
            launch_id, doc.get("patient"), doc.get("encounter"), bool(doc["need_patient_banner"])
        )
