"""The identity workflow (portal/hooks.py): unique identifiers claimed in the Patient
write's transaction (claims.py) and masked identifiers shown masked (masking.py, a
read-time view on the identifier table's types). A masked value written back as shown is
restored in the write path itself (rest/interactions.py `_admit`, `unmask_write`), before
the write rules compare the versions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fhir_server.access import masking
from fhir_server.config import Settings
from fhir_server.exchange.identity import claims
from fhir_server.exchange.identity.table import identifiers, matching
from fhir_server.portal.hooks import Workflow, WriteEvent

if TYPE_CHECKING:
    from pymongo.asynchronous.client_session import AsyncClientSession

    from fhir_server.context import ServerContext
    from fhir_server.rest.messages import FhirRequest
    from fhir_server.storage.store import Version

Doc = dict[str, Any]


def workflow(settings: Settings, registry: Any) -> Workflow:
    table = identifiers()
    matching()  # parsed now: a malformed matching table stops the start-up too

    async def after(
        ctx: ServerContext,
        req: FhirRequest,
        event: WriteEvent,
        version: Version,
        session: AsyncClientSession | None,
    ) -> None:
        if event.rt != claims.PATIENT:
            return
        await claims.move(ctx, f"{event.rt}/{version.id}", event.old, version.resource, session)

    return Workflow("identity", table.types, after=after, view=masking.view)
