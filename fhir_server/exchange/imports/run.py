"""Running one import job: each input file pulled over HTTP, a batch of lines at a time.

The file is fetched (no redirects followed: a redirect could lead anywhere the check below
did not look) after its URL passed the SSRF guard again, on the addresses it resolves to
now. Lines already recorded as done (a job taken up again after a restart) are read past,
not written again. After each batch the input's line and counts are checkpointed under the
job's claim (store.py); a lost claim stops the run. A line that is not JSON, not valid, or
refused by the write path goes to the error file and the import goes on.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from fhir_server.errors import FhirError
from fhir_server.exchange.imports import guard
from fhir_server.exchange.imports.store import ImportStore
from fhir_server.exchange.imports.table import ImportTable
from fhir_server.exchange.imports.write import (
    Source,
    admit,
    provenance_of,
    refused,
    stamp,
    stamp_all,
    unreadable,
    write_batch,
    write_one,
)
from fhir_server.rest.messages import FhirRequest

if TYPE_CHECKING:
    from fhir_server.context import ServerContext

log = logging.getLogger("fhir_server.exchange.imports")
Doc = dict[str, Any]
COUNTS = ("created", "updated", "unchanged", "failed")


class Lost(Exception):
    """The job is no longer this process's: cancelled, or taken after a lapsed lease."""


class Stopped(Exception):
    """This process is stopping the job (its shutdown): the lease goes back at once."""


class InputFailed(Exception):
    """A file that cannot be fetched at all (recorded as one error, the job goes on)."""


def blank_state() -> Doc:
    return {"line": 0, "done": False, **{k: 0 for k in COUNTS}}


async def lines_of(table: ImportTable, client: httpx.AsyncClient, url: str) -> AsyncIterator[bytes]:
    """The file's lines, each at most `max_line_bytes`, the file at most `max_file_bytes`."""
    async with client.stream("GET", url, headers={"Accept": "application/fhir+ndjson"}) as r:
        if r.status_code != 200:
            raise InputFailed(f"fetching {url} answered HTTP {r.status_code}")
        rest = b""
        size = 0
        async for chunk in r.aiter_bytes():
            size += len(chunk)
            if size > table.max_file_bytes:
                raise InputFailed(f"{url} is larger than {table.max_file_bytes} bytes")
            parts = (rest + chunk).split(b"\n")
            rest = parts.pop()
            if len(rest) > table.max_line_bytes:
                raise InputFailed(f"{url} has a line longer than {table.max_line_bytes} bytes")
            for p in parts:
                yield p
        if rest:
            yield rest


async def run_input(
    ctx: ServerContext,
    store: ImportStore,
    table: ImportTable,
    job: Doc,
    i: int,
    req: FhirRequest,
    lease_s: float,
    client: httpx.AsyncClient,
) -> None:
    entry = job["inputs"][i]
    state: Doc = dict(entry.get("state") or blank_state())
    if state["done"]:
        return
    source = Source(
        entry["url"], entry["type"], job["partner"].get("organization"), job["partner"]["client"]
    )
    production = ctx.settings.production
    expires = job["expires"] + timedelta(hours=table.keep_hours)
    # The first batch after a restart may have been written without its Provenance (the
    # process stopped between the two): unchanged resources of that batch are stamped too.
    heal = bool(job.get("resumed")) and state["line"] > 0
    why = await guard.why_refused(table, source.url, production)
    errors: list[tuple[int, int, bytes]] = []
    if why is None:
        try:
            n = 0
            batch: list[tuple[int, bytes]] = []
            async for raw in lines_of(table, client, source.url):
                n += 1
                if n <= state["line"]:
                    continue
                if raw.strip():
                    batch.append((n, raw))
                state["line"] = n
                if len(batch) >= table.batch_lines:
                    await _batch(ctx, req, table, source, batch, state, errors, i, heal)
                    await _checkpoint(store, job, lease_s, i, state, errors, expires)
                    batch, heal = [], False
            await _batch(ctx, req, table, source, batch, state, errors, i, heal)
        except InputFailed as exc:
            why = str(exc)
        except httpx.HTTPError as exc:
            why = f"fetching {source.url} failed: {type(exc).__name__}"
    if why is not None:
        state["failed"] += 1
        errors.append((i, 0, unreadable(0, source, why)))
    state["done"] = True
    await _checkpoint(store, job, lease_s, i, state, errors, expires)


async def _batch(
    ctx: ServerContext,
    req: FhirRequest,
    table: ImportTable,
    source: Source,
    batch: list[tuple[int, bytes]],
    state: Doc,
    errors: list[tuple[int, int, bytes]],
    i: int,
    heal: bool,
) -> None:
    """Parse and validate each line (a bad one goes to the errors), write the rest in one
    transaction (or, when it is refused whole, one by one), then their Provenance."""
    admitted: list[tuple[Doc, list[str], list[tuple[str, str]]]] = []
    numbers: list[int] = []
    for n, raw in batch:
        try:
            resource = orjson.loads(raw)
        except orjson.JSONDecodeError:
            resource = None
        if not isinstance(resource, dict):
            state["failed"] += 1
            errors.append((i, n, unreadable(n, source, "not a JSON object")))
            continue
        try:
            path, params = admit(ctx, resource, source)
        except FhirError as exc:
            state["failed"] += 1
            errors.append((i, n, refused(n, source, exc)))
            continue
        admitted.append((resource, path, params))
        numbers.append(n)
    written = await write_batch(ctx, req, admitted) if admitted else []
    provs: list[Doc] = []
    if written is not None:
        for outcome, location, lu in written:
            state[outcome] += 1
            if outcome != "unchanged" or heal:
                provs.append(provenance_of(table, location, lu, source))
        await stamp_all(ctx, req, provs)
        return
    # Refused whole (one resource the write path refuses, two lines for one resource):
    # one at a time, so each refusal costs only its own line.
    for (resource, _path, _params), n in zip(admitted, numbers, strict=True):
        try:
            one = await write_one(ctx, req, resource, source)
            if one.outcome != "unchanged" or heal:
                await stamp(ctx, req, table, one, source)
        except FhirError as exc:
            state["failed"] += 1
            errors.append((i, n, refused(n, source, exc)))
            continue
        state[one.outcome] += 1


async def _checkpoint(
    store: ImportStore,
    job: Doc,
    lease_s: float,
    i: int,
    state: Doc,
    errors: list[tuple[int, int, bytes]],
    expires: Any,
) -> None:
    if job.get("stop"):
        # Checked here as well as by task cancellation, which a library call in the write
        # path may absorb: the batch just written is not recorded, and is run again (its
        # writes and Provenance are then unchanged) by whoever takes the job up.
        raise Stopped(job["_id"])
    if errors:
        await store.add_errors(job["_id"], errors, expires)
        errors.clear()
    done = sum(
        (s.get("state") or {}).get("created", 0) + (s.get("state") or {}).get("updated", 0)
        for k, s in enumerate(job["inputs"])
        if k != i
    )
    progress = (
        f"file {i + 1} of {len(job['inputs'])}, line {state['line']}, "
        f"{done + state['created'] + state['updated']} resources written"
    )
    if not await store.checkpoint(job, lease_s, i, dict(state), progress):
        raise Lost(job["_id"])
    job["inputs"][i]["state"] = dict(state)
