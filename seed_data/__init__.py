"""The deterministic synthetic population (see README.md) and its contract files.

``seed_data.population.build_population(today)`` builds the resources;
:func:`load_logins` and :func:`load_clients` read the committed ``logins.json`` and
``clients.json`` (development only: the server must not create these logins or clients in
production mode).
"""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any


def _read(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(files(__name__).joinpath(name).read_text(encoding="utf-8"))
    return data


def load_logins() -> dict[str, Any]:
    """``{"logins": [...], "fixtures": {...}, "fixture_types": {...}}``."""
    return _read("logins.json")


def load_clients() -> dict[str, Any]:
    """``{"clients": [...]}``: the registered SMART clients."""
    return _read("clients.json")
