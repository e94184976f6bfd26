"""The identifier cross-walk: given one identifier, the person's others (IHE PIXm
`$ihe-pix`, https://profiles.ihe.net/ITI/PIXm/ITI-83.html), through the Patients that carry
it and the Patients they link to (`Patient.link`: replaced-by, replaces, seealso, refer).

Everything is read under the caller's policy: a Patient the caller may not see is neither
answered nor followed through, and its identifiers leave through the read-time views (an
SSN masked to its last four digits for tokens without a `system/` scope).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fhir_server.access.masking import refuse_masked_search
from fhir_server.access.policy import AccessPolicy
from fhir_server.access.screen import screen
from fhir_server.context import ServerContext
from fhir_server.errors import BadRequest, Forbidden, NotFound
from fhir_server.exchange.identity.table import IdentifierTable, identifiers
from fhir_server.search.execute import run_search
from fhir_server.search.parse import parse_search

Doc = dict[str, Any]
PATIENT = "Patient"
# How far links are followed (a replaced-by chain of merges, a see-also ring).
MAX_HOPS = 4
MAX_PATIENTS = 50


def split_token(token: str) -> tuple[str, str]:
    system, sep, value = token.partition("|")
    if not sep or not system or not value:
        raise BadRequest("'sourceIdentifier' must be system|value", code="value")
    return system, value


async def linked_patients(ctx: ServerContext, policy: AccessPolicy, source: str) -> list[Doc]:
    """The visible Patients carrying `source` (system|value), then those their links name,
    breadth first, each once."""
    filt = policy.type_filter if policy.restricted else None
    req = parse_search(PATIENT, [("identifier", source)], ctx.registry, strict=True)
    page = await run_search(
        ctx.store,
        ctx.registry,
        replace(req, count=MAX_PATIENTS, total="none"),
        type_filter=filt,
        max_time_ms=ctx.settings.query_max_time_ms,
    )
    found: dict[str, Doc] = {}
    frontier: list[Doc] = []
    for r in page.resources:
        key = f"{PATIENT}/{r.get('id')}"
        if _admit(ctx, policy, r, page.stored_access.get(key)):
            found[key] = r
            frontier.append(r)
    for _ in range(MAX_HOPS):
        nxt: list[Doc] = []
        for r in frontier:
            for ref in _links(r):
                if ref in found or len(found) >= MAX_PATIENTS:
                    continue
                doc = await ctx.store.find_visible(
                    PATIENT, ref.split("/", 1)[1], policy.read_filter(PATIENT)
                )
                res = doc.get("res") if doc is not None else None
                if isinstance(res, dict) and _admit(ctx, policy, res, doc):
                    found[ref] = res
                    nxt.append(res)
        frontier = nxt
    return list(found.values())


def _admit(ctx: ServerContext, policy: AccessPolicy, res: Doc, stored: Any) -> bool:
    if not policy.restricted:
        return True
    return screen(policy, ctx.store.indexer, res, where="ihe-pix", stored=stored)


def _links(res: Doc) -> list[str]:
    out = []
    for link in res.get("link") or ():
        ref = (link.get("other") or {}).get("reference") if isinstance(link, dict) else None
        if isinstance(ref, str) and ref.startswith(f"{PATIENT}/") and "/" not in ref[8:]:
            out.append(ref)
    return out


def _wanted(table: IdentifierTable, targets: list[str]) -> set[str] | None:
    """The URIs asked for (each with its aliases); None: every system. IHE PIXm answers a
    target system it does not know with 403."""
    if not targets:
        return None
    uris: set[str] = set()
    for t in targets:
        system = table.of(t)
        if system is None:
            raise Forbidden(f"targetSystem {t!r} is not an identifier system this server knows")
        uris |= set(system.uris)
    return uris


async def pix(ctx: ServerContext, policy: AccessPolicy, source: str, targets: list[str]) -> Doc:
    """The Parameters answer: `targetIdentifier` per other identifier, `targetId` per Patient."""
    table = identifiers()
    system, value = split_token(source)
    known = table.of(system)
    if known is None or not known.pix:
        raise BadRequest(
            f"sourceIdentifier system {system!r} is not a domain this server cross-walks",
            code="code-invalid",
        )
    refuse_masked_search(policy, [("sourceIdentifier", source)])
    wanted = _wanted(table, targets)
    patients = await linked_patients(ctx, policy, source)
    if not patients:
        raise NotFound(f"no Patient is known by {known.label} {value}")
    params: list[Doc] = []
    seen: set[tuple[str, str]] = set()
    for p in patients:
        for ident in p.get("identifier") or ():
            if not isinstance(ident, dict) or not ident.get("system") or "value" not in ident:
                continue
            sys_, val = str(ident["system"]), str(ident["value"])
            same = table.of(sys_)
            if same is known and val == value:
                continue  # the source itself
            if wanted is not None and sys_ not in wanted:
                continue
            if (sys_, val) in seen:
                continue
            seen.add((sys_, val))
            params.append({"name": "targetIdentifier", "valueIdentifier": ident})
    for p in patients:
        params.append({"name": "targetId", "valueReference": {"reference": f"{PATIENT}/{p['id']}"}})
    return {"resourceType": "Parameters", "parameter": params}
