"""The one table of portal workflows (hooks.py), built at start-up from their profile tables.

Each workflow module offers `workflow(settings, registry) -> Workflow`, which parses its table
fail-fast; add it to `BUILDERS`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fhir_server.access import release_workflow as release
from fhir_server.config import Settings
from fhir_server.exchange.identity import workflow as identity
from fhir_server.notify import workflow as notifications
from fhir_server.portal import attachments, clipboards, messaging, response_times, scheduling
from fhir_server.portal.hooks import Workflow, Workflows
from fhir_server.portal.prescriptions import workflow as prescriptions

Builder = Callable[[Settings, Any], Workflow]

BUILDERS: tuple[Builder, ...] = (
    messaging.workflow,
    attachments.workflow,
    response_times.workflow,
    scheduling.workflow,
    clipboards.workflow,
    prescriptions.workflow,
    release.workflow,
    identity.workflow,
    # After the messaging step: it queues what the completed message says.
    notifications.workflow,
)


def build(settings: Settings, registry: Any) -> Workflows:
    return Workflows(tuple(b(settings, registry) for b in BUILDERS))
