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
from fhir_server.exchange.imports.store import now
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


def admit(ctx: Any, resource: Doc, source: Source) -> tuple[list[str], list[tuple[str, str]]]:
    """Validate one line's resource; the path and condition it is written by (raises the
    FhirError that refuses it)."""
    rt = resource.get("resourceType")
    if rt != source.rt:
        raise BadRequest(f"the file holds {source.rt} resources, not {rt!r}")
    ctx.validator.validate(resource)
    cond = condition(resource)
    rid = resource.get("id")
    if cond is not None:
        return [rt], cond
    if isinstance(rid, str) and rid:
        return [rt, rid], []
    raise BadRequest(
        f"a {rt} needs an identifier or an id to be imported without duplicating it",
        code="required",
    )


def _url(path: list[str], params: list[tuple[str, str]]) -> str:
    return "/".join(path) + ("?" + "&".join(f"{k}={v}" for k, v in params) if params else "")


async def write_batch(
    ctx: Any, req: FhirRequest, items: list[tuple[Doc, list[str], list[tuple[str, str]]]]
) -> list[tuple[str, str, str]] | None:
    """Admitted resources in one transaction bundle (the bundle path's few bulk writes, far
    cheaper than a write each): per item (outcome, `Type/id/_history/n`, lastUpdated); None
    when the transaction as a whole was refused (the caller then writes one at a time, so
    one bad resource costs only itself)."""
    started = instant(now())
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": r, "request": {"method": "PUT", "url": _url(path, params)}}
            for r, path, params in items
        ],
    }
    try:
        resp = await dispatch(
            ctx, FhirRequest(method="POST", path=[], body=bundle, policy=req.policy, validated=True)
        )
    except FhirError:
        return None
    out: list[tuple[str, str, str]] = []
    for e in (resp.body or {}).get("entry", []):
        r = e.get("response") or {}
        status = str(r.get("status", ""))
        lu = str(r.get("lastModified", ""))
        # An update with the stored content keeps the stored version and its older time.
        outcome = (
            "created" if status.startswith("201") else "updated" if lu >= started else "unchanged"
        )
        out.append((outcome, str(r.get("location", "")), lu))
    return out if len(out) == len(items) else None


async def write_one(ctx: Any, req: FhirRequest, resource: Doc, source: Source) -> Written:
    """Validate and write one resource (raises the FhirError that refused it)."""
    path, params = admit(ctx, resource, source)
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
    # An update with the stored content makes no version and names no previous one.
    return Written("updated" if len(resp.versions) > 1 else "unchanged", v)


def provenance_of(table: ImportTable, location: str, recorded: str, source: Source) -> Doc:
    vid = location.rsplit("/", 1)[-1]
    return provenance.build(
        table, location, recorded, vid == "1", source.organization, source.client_id, source.url
    )


async def stamp_all(ctx: Any, req: FhirRequest, provs: list[Doc]) -> None:
    """The written versions' Provenances, in one transaction (each a no-op when already
    there: their ids and content follow from the versions)."""
    if not provs:
        return
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": p, "request": {"method": "PUT", "url": f"Provenance/{p['id']}"}}
            for p in provs
        ],
    }
    await dispatch(ctx, FhirRequest(method="POST", path=[], body=bundle, policy=req.policy))


async def stamp(
    ctx: Any, req: FhirRequest, table: ImportTable, written: Written, source: Source
) -> None:
    """The written version's Provenance (a no-op when it is already there)."""
    v = written.version
    target = f"{v.rt}/{v.id}/_history/{v.vid}"
    await stamp_all(ctx, req, [provenance_of(table, target, instant(v.lu), source)])
