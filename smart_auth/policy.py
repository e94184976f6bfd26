"""Login-level ceilings and lockout rules, read from the tables in ``profiles/access/``.

DESIGN.md, "Access policy": the login level caps what a token may carry; the level itself
rides in the token as ``acr`` (OpenID Connect Core 1.0, section 2, "acr").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smart_auth.scopes import Scope, narrow, parse_scopes, reads_within

PATIENT_RULES = ("self-and-acts-for", "acts-for-only")


@dataclass(frozen=True)
class LoginLevel:
    name: str
    label: str
    level: int
    patients: str
    ceiling: tuple[Scope, ...]

    def cap(self, requested: list[Scope]) -> list[Scope]:
        """Requested scopes cut down to this level's ceiling (system/ scopes never pass); a
        scope whose query reads a type the ceiling withholds
        (`user/Patient.rs?_has:Observation:patient:code=...` for a Basic login) is dropped
        whole, since its answers would tell what that type holds."""
        return [s for s in narrow(requested, self.ceiling) if reads_within(s, self.ceiling)]

    def patient_choices(self, fhir_user: str, acts_for: tuple[str, ...]) -> list[str]:
        """Patients (``Patient/<id>``) this login may pick as launch context."""
        if self.patients == "acts-for-only":
            return list(dict.fromkeys(acts_for))
        own = [fhir_user] if fhir_user.startswith("Patient/") else []
        return list(dict.fromkeys(own + list(acts_for)))


@dataclass(frozen=True)
class Lockout:
    max_failures: int
    lock_seconds: float


@dataclass(frozen=True)
class AccessPolicy:
    levels: dict[str, LoginLevel]
    lockout: Lockout

    def level(self, name: str) -> LoginLevel:
        try:
            return self.levels[name]
        except KeyError:
            raise ValueError(f"unknown login level {name!r}") from None

    @classmethod
    def load(
        cls, directory: Path, *, max_failures: int | None = None, lock_days: float | None = None
    ) -> AccessPolicy:
        raw_levels = _read(directory / "login_levels.json")["levels"]
        levels: dict[str, LoginLevel] = {}
        for name, spec in raw_levels.items():
            if spec["patients"] not in PATIENT_RULES:
                raise ValueError(f"{name}: 'patients' must be one of {PATIENT_RULES}")
            ceiling = parse_scopes(spec["ceiling"], strict=True)
            if any(s.context == "system" for s in ceiling):
                raise ValueError(f"{name}: a login level cannot grant system/ scopes")
            levels[name] = LoginLevel(
                name, spec["label"], int(spec["level"]), spec["patients"], ceiling
            )
        raw_lock = _read(directory / "lockout.json")
        failures = max_failures if max_failures is not None else int(raw_lock["max_failures"])
        days = lock_days if lock_days is not None else float(raw_lock["lock_days"])
        if failures < 1 or days < 0:
            raise ValueError("lockout: max_failures must be >= 1 and lock_days >= 0")
        return cls(levels, Lockout(failures, days * 86400))


def _read(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data
