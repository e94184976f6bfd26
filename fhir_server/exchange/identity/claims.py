"""Unique identifiers (profiles/exchange/identifiers.json, `unique`): one claim document per
identifier value, `_id` `<key>|<value>` (the table's key, so an alias system and the
canonical one claim the same value), `owner` the Patient holding it.

The claims move in the transaction that writes the Patient (the identity workflow's `after`
step), so of two Patients written at once with the same EDIPI one commits and the other's
insert fails (a duplicate `_id`, or a write conflict while the first is uncommitted): its
write is undone and answered 409 naming the first. Never read-then-write. The only module
that touches `identifier_claims`.

A claim whose owner was deleted, or merged away (a `replaced-by` link: merge.py), is taken
over by the next Patient that carries the value.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import DuplicateKeyError, OperationFailure

from fhir_server.db.transactions import is_conflict
from fhir_server.errors import Conflict
from fhir_server.exchange.identity.table import IdentifierTable, identifiers

if TYPE_CHECKING:
    from fhir_server.context import ServerContext

Doc = dict[str, Any]
COLLECTION = "identifier_claims"
PATIENT = "Patient"
# How long a write that met an uncommitted rival waits to name it (the rival commits).
NAME_WAIT_S = (0.05, 0.1, 0.2, 0.4)


def replaced(resource: Doc | None) -> bool:
    """A Patient merged into another (Patient.link `replaced-by`) holds no claims."""
    return any(
        isinstance(link, dict) and link.get("type") == "replaced-by"
        for link in (resource or {}).get("link") or ()
    )


def unique_values(resource: Doc | None, table: IdentifierTable | None = None) -> dict[str, str]:
    """Claim id -> `label| value` (the value left out for a masked system) for the unique
    identifiers a Patient holds."""
    if resource is None or replaced(resource):
        return {}
    table = table or identifiers()
    out: dict[str, str] = {}
    for ident in resource.get("identifier") or ():
        if not isinstance(ident, dict) or not isinstance(ident.get("value"), str):
            continue
        system = table.of(ident.get("system"))
        if system is not None and system.unique and ident["value"]:
            shown = "" if system.masked else f" {ident['value']}"
            out[f"{system.key}|{ident['value']}"] = f"{system.label}|{shown}"
    return out


async def move(
    ctx: ServerContext,
    owner: str,
    old: Doc | None,
    new: Doc | None,
    session: AsyncClientSession | None,
) -> None:
    """Release the claims `old` held and `new` drops; take the ones `new` holds (409 when
    another live Patient holds one)."""
    col = ctx.store.db[COLLECTION]
    before, after = unique_values(old), unique_values(new)
    for claim in before.keys() - after.keys():
        await col.delete_one({"_id": claim, "owner": owner}, session=session)
    for claim, label in after.items():
        await _take(ctx, col, claim, label, owner, session)


async def _take(
    ctx: ServerContext,
    col: Any,
    claim: str,
    label: str,
    owner: str,
    session: AsyncClientSession | None,
) -> None:
    """The claim read in the transaction, then moved by a conditional write: an insert
    (unique `_id`) when there was none, an update conditional on the holder read when that
    holder is gone. A failed write aborts the transaction (MongoDB aborts it on any write
    error), so nothing more is asked of it: the rival is named from outside."""
    held = await col.find_one({"_id": claim}, session=session)
    first = str((held or {}).get("owner", ""))
    if first == owner:
        return
    if first and not await _stale(ctx, first, session):
        raise Conflict(_message(first, label))
    try:
        if not first:
            await col.insert_one({"_id": claim, "owner": owner}, session=session)
            return
        r = await col.update_one(
            {"_id": claim, "owner": first}, {"$set": {"owner": owner}}, session=session
        )
    except DuplicateKeyError:
        raise Conflict(await _rival_message(col, claim, label, owner)) from None
    except OperationFailure as exc:
        if not is_conflict(exc):
            raise
        # A rival transaction holds the claim uncommitted: name it once it commits.
        raise Conflict(await _rival_message(col, claim, label, owner)) from None
    if r.matched_count != 1:
        raise Conflict(await _rival_message(col, claim, label, owner))


async def _stale(ctx: ServerContext, holder: str, session: AsyncClientSession | None) -> bool:
    """The holder was deleted or merged away: its claim may be taken over."""
    rt, _, rid = holder.partition("/")
    doc = await ctx.store.current(rt, rid, session=session)
    return doc is None or replaced(doc.get("res"))


async def _rival_message(col: Any, claim: str, label: str, owner: str) -> str:
    for pause in NAME_WAIT_S:
        await asyncio.sleep(pause)
        held = await col.find_one({"_id": claim})
        if held is not None and held.get("owner") not in (None, owner):
            return _message(str(held["owner"]), label)
    return (
        f"another Patient with the {label.replace('|', '')} was being written at the same moment; "
        "nothing was changed"
    )


def _message(first: str, label: str) -> str:
    name, _, shown = label.partition("|")
    return f"{first} already carries the {name}{shown}; no two Patients may share a {name}"
