"""Everything a request handler needs, built once in the app lifespan and passed down."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fhir_server.config import Settings
from fhir_server.operations.registry import NO_OPERATIONS, OperationTable
from fhir_server.portal.hooks import NONE, Workflows
from fhir_server.storage.store import ResourceStore

if TYPE_CHECKING:
    from fhir_server.access.policy_epochs import InputCache
    from fhir_server.access.policy_tables import PolicyTables
    from fhir_server.search.registry import Registry
    from fhir_server.validation import Validator


@dataclass
class ServerContext:
    settings: Settings
    store: ResourceStore
    validator: Validator
    registry: Registry
    known_types: frozenset[str]
    # The access tables compiled once at start-up (access/policy_tables.py).
    policy_tables: PolicyTables
    # The CapabilityStatement, built on first request (see rest/dispatch.py).
    capability: dict[str, Any] | None = None
    # ... and serialised once (rest/render.py sends it as is unless `_pretty`).
    capability_json: bytes | None = None
    # The portal workflows riding on the write path (portal/hooks.py), built at start-up.
    workflows: Workflows = NONE
    # The operations and the URLs they own (operations/table.py), routed by rest/dispatch.py.
    operations: OperationTable = NO_OPERATIONS
    # The running $export tasks of this process (fhir_server/exchange/bulk_tasks.py).
    bulk: Any = None
    # The import jobs this process runs (fhir_server/exchange/imports/tasks.py).
    imports: Any = None
    # The documents access policies read, cached per token subject under their epochs
    # (access/policy_epochs.py); None reads them on every request.
    policy_inputs: InputCache | None = None

    @property
    def base_url(self) -> str:
        return self.settings.base_url
