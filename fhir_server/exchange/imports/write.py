"""One imported resource through the one write path, then its Provenance.

Each line is validated by the server's validator, then written by the same interactions a
client's PUT uses (rest/dispatch.py: write rules, access policy, workflows, versioned
store), under the partner's own access policy. De-duplication is the conditional update:
a resource with an identifier is `PUT Type?identifier=system|value` (its first identifier
with both), so a second import of the same record updates it (or, unchanged, leaves it
alone) rather than duplicating it; one without an identifier is `PUT Type/id`; one with
neither is refused (imports.json, `dedupe_note`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from fhir_server.errors import BadRequest, FhirError, Issue, operation_outcome
from fhir_server.exchange.imports import provenance
from fhir_server.exchange.imports.table import ImportTable
from fhir_server.rest.dispatch import dispatch
from fhir_server.rest.messages import FhirRequest
from fhir_server.storage.store import Version, instant

Doc = dict[str, Any]


@dataclass(frozen=True)
class Source:
    """Where the lines come from and on whose behalf they are written."""

    url: str
    rt: str
    organization: str | None
    client_id: str


@dataclass(frozen=True)
class Written:
    outcome: str  # created | updated | unchanged
    version: Version


def condition(resource: Doc) -> list[tuple[str, str]] | None:
    for ident in resource.get("identifier") or []:
        if isinstance(ident, dict):
            system, value = ident.get("system"), ident.get("value")
            if isinstance(system, str) and isinstance(value, str) and system and value:
                esc = quote(system, safe=":/.-_~") + "|" + quote(value, safe=":/.-_~")
                return [("identifier", esc.replace("%7C", "|"))]
    return None


def refused(line: int, source: Source, error: FhirError) -> bytes:
    """The error file's line: the write's own OperationOutcome, with where it came from."""
    import orjson

    outcome = error.outcome()
    where = f"line {line} of {source.url}"
    for issue in outcome.get("issue", []):
        issue["diagnostics"] = f"{where}: {issue.get('diagnostics', '')}".rstrip(": ")
    return orjson.dumps(outcome)


def unreadable(line: int, source: Source, why: str) -> bytes:
    import orjson

    text = f"line {line} of {source.url}: {why}"
    return orjson.dumps(operation_outcome([Issue("structure", text)]))


async def write_one(ctx: Any, req: FhirRequest, resource: Doc, source: Source) -> Written:
    """Validate and write one resource (raises the FhirError that refused it)."""
    rt = resource.get("resourceType")
    if rt != source.rt:
        raise BadRequest(f"the file holds {source.rt} resources, not {rt!r}")
    ctx.validator.validate(resource)
    cond = condition(resource)
    rid = resource.get("id")
    if cond is not None:
        path, params = [rt], cond
    elif isinstance(rid, str) and rid:
        path, params = [rt, rid], []
    else:
        raise BadRequest(
            f"a {rt} needs an identifier or an id to be imported without duplicating it",
            code="required",
        )
    resp = await dispatch(
        ctx,
        FhirRequest(
            method="PUT",
            path=path,
            params=params,
            body=resource,
            policy=req.policy,
            validated=True,
        ),
    )
    v = resp.versions[0]
    if resp.status == 201:
        return Written("created", v)
    unchanged = len(resp.versions) > 1 and resp.versions[1].vid == v.vid
    return Written("unchanged" if unchanged else "updated", v)


async def stamp(
    ctx: Any, req: FhirRequest, table: ImportTable, written: Written, source: Source
) -> None:
    """The written version's Provenance (a no-op when it is already there)."""
    v = written.version
    target = f"{v.rt}/{v.id}/_history/{v.vid}"
    prov = provenance.build(
        table,
        target,
        instant(v.lu),
        v.vid == 1,
        source.organization,
        source.client_id,
        source.url,
    )
    await dispatch(
        ctx,
        FhirRequest(method="PUT", path=["Provenance", prov["id"]], body=prov, policy=req.policy),
    )
