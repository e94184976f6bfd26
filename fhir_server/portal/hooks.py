"""Workflow steps that ride on the one write path, so a plain POST obeys the same rules as
an operation that writes (../shared/DESIGN.md, "Portal workflows").

A workflow names the resource types it watches and may give two steps:

- `before(ctx, req, event) -> resource`: runs in the write path after validation, the access
  policy and the write-rule table (rest/interactions.py, `_admit`). It may complete the
  resource (e.g. `Communication.sent`, `sender` from the token) and returns what to store, or
  refuses the write by raising a FhirError (422 `business-rule` with the reason).
- `after(ctx, req, event, version, session)`: runs once the store wrote the version, in the
  SAME database transaction (`session`), for side effects that must commit with the write or
  not at all (a response-time Task, a queued notification). Writes it makes go through
  `ctx.store` with that session. It runs on a create, update or patch that changed the
  resource; deletes are not watched (no portal actor deletes: profiles/access/writes.json).
- `view(policy, resource, stored)`: runs on every resource of its types that leaves the
  server to a token-governed request, after the post-check (access/views.py): read-time
  data such as a prescription's eligibility, or masking an element.

For a type that has an `after` step, a request outside a transaction bundle is run in a
transaction of its own (`write_session`); a concurrent conflict answers 412 "retry", as a
bundle's does. Inside a bundle the bundle's transaction is used, so it stays all-or-nothing.

The table of workflows is built once at start-up (`Workflows.build`), each from its own
profile table, so a malformed table stops the server there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pymongo.asynchronous.client_session import AsyncClientSession

from fhir_server.access.views import View
from fhir_server.db.transactions import own_transaction
from fhir_server.errors import PreconditionFailed

if TYPE_CHECKING:
    from fhir_server.context import ServerContext
    from fhir_server.rest.messages import FhirRequest
    from fhir_server.storage.store import Version

Doc = dict[str, Any]


@dataclass(frozen=True)
class WriteEvent:
    """One write as the workflow sees it. `old` is the current version of the resource for
    an update, patch or delete (None for a create); `new` the resource about to be stored
    (None for a delete)."""

    rt: str
    rid: str | None
    interaction: str  # create | update | patch | delete
    old: Doc | None
    new: Doc | None


Before = Callable[["ServerContext", "FhirRequest", WriteEvent], Awaitable[Doc | None]]
After = Callable[
    ["ServerContext", "FhirRequest", WriteEvent, "Version", AsyncClientSession | None],
    Awaitable[None],
]


@dataclass(frozen=True)
class Workflow:
    name: str
    types: frozenset[str]
    before: Before | None = None
    after: After | None = None
    view: View | None = None


@dataclass(frozen=True)
class Workflows:
    """The workflows of this server, by the resource type they watch."""

    all: tuple[Workflow, ...] = ()

    def of(self, rt: str) -> tuple[Workflow, ...]:
        return tuple(w for w in self.all if rt in w.types)

    def watches(self, rt: str) -> bool:
        return any(rt in w.types for w in self.all)

    @cached_property
    def views(self) -> dict[str, tuple[View, ...]]:
        """The read-time views by resource type, in table order (a request's policy holds
        them: access/views.py)."""
        out: dict[str, tuple[View, ...]] = {}
        for w in self.all:
            if w.view is not None:
                for rt in sorted(w.types):
                    out[rt] = (*out.get(rt, ()), w.view)
        return out

    def has_after(self, rt: str) -> bool:
        return any(rt in w.types and w.after is not None for w in self.all)

    async def before(self, ctx: ServerContext, req: FhirRequest, event: WriteEvent) -> Doc | None:
        new = event.new
        for w in self.of(event.rt):
            if w.before is not None:
                new = await w.before(ctx, req, _with_new(event, new))
        return new

    async def after(
        self,
        ctx: ServerContext,
        req: FhirRequest,
        event: WriteEvent,
        version: Version,
        session: AsyncClientSession | None,
    ) -> None:
        for w in self.of(event.rt):
            if w.after is not None:
                await w.after(ctx, req, event, version, session)


def _with_new(event: WriteEvent, new: Doc | None) -> WriteEvent:
    if new is event.new:
        return event
    return WriteEvent(event.rt, event.rid, event.interaction, event.old, new)


NONE = Workflows()


@asynccontextmanager
async def write_session(
    ctx: ServerContext, req: FhirRequest, rt: str
) -> AsyncIterator[AsyncClientSession | None]:
    """The session a write and its workflows' `after` steps share: the bundle's, or a
    transaction of its own when the type has an `after` step, or none (the store then runs
    the write in its own transaction, as before)."""
    if req.session is not None or not ctx.workflows.has_after(rt):
        yield req.session
        return

    def conflict() -> Exception:
        return PreconditionFailed(
            f"the {rt} write conflicted with a concurrent one; nothing was changed, retry it"
        )

    async with own_transaction(ctx.store.client, req, conflict) as s:
        yield s
