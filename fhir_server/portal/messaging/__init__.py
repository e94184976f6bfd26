"""Secure messaging: threads of Communications between patients (or their proxies) and
their care teams, rules as data in `profiles/portal/messaging.json` (docs/portal.md)."""

from __future__ import annotations

from functools import partial
from typing import Any

from fhir_server.config import Settings
from fhir_server.portal.hooks import Workflow
from fhir_server.portal.messaging import threads
from fhir_server.portal.messaging.table import load_table


def workflow(settings: Settings, registry: Any) -> Workflow:
    """The messaging workflow; its table is parsed here, so a malformed one stops start-up."""
    known = frozenset(registry.resource_types) if registry is not None else None
    table = load_table(known_types=known)
    return Workflow("messaging", frozenset({threads.RT}), before=partial(threads.before, table))
