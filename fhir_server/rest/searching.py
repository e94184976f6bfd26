"""Search interactions: type, system and compartment search, and conditional matching.

All of them go through the one search parser (fhir_server.search), as do conditional
create/update/delete. See https://hl7.org/fhir/R4/search.html.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fhir_server.access.masking import refuse_masked_search
from fhir_server.access.screen import screen
from fhir_server.context import ServerContext
from fhir_server.rest.headers import prefer
from fhir_server.rest.messages import FhirRequest, FhirResponse
from fhir_server.search.bundle import searchset_bundle
from fhir_server.search.execute import find_matches, run_search
from fhir_server.search.parse import parse_search
from fhir_server.search.query import NOTHING
from fhir_server.search.summary import apply


async def conditional_matches(
    ctx: ServerContext,
    rt: str,
    condition: str | list[tuple[str, str]],
    req: FhirRequest | None = None,
) -> list[str]:
    """Ids of the (at most two) resources a conditional interaction's criteria match,
    among those the request may see."""
    query = condition if isinstance(condition, str) else urlencode(condition)
    query = query.split("?", 1)[1] if "?" in query else query
    policy = req.policy if req is not None else None
    if policy is not None and policy.restricted:
        refuse_masked_search(policy, parse_qsl(query, keep_blank_values=True))
    type_filter = policy.type_filter if policy is not None and policy.restricted else None
    matches = await find_matches(
        ctx.store.db,
        ctx.registry,
        rt,
        query,
        limit=2,
        type_filter=type_filter,
        max_time_ms=ctx.settings.query_max_time_ms,
        shown_patient=policy.sees_compartment if policy is not None and policy.restricted else None,
    )
    return [m["id"] for m in matches]


def _nothing(rt: str) -> dict[str, Any]:
    return NOTHING


def _strict(req: FhirRequest) -> bool:
    return prefer(req.header("prefer")).get("handling", "strict") != "lenient"


async def search(
    ctx: ServerContext, req: FhirRequest, rt: str | None, *, compartment: str | None = None
) -> FhirResponse:
    params = list(req.params)
    if req.method == "POST" and isinstance(req.body, str):
        params += parse_qsl(req.body, keep_blank_values=True)
    params = [(k, v) for k, v in params if k not in ("_format", "_pretty")]
    policy = req.policy
    if policy.restricted:
        # Before parsing: a masked system in any parameter (chains, `_has` too).
        refuse_masked_search(policy, params)
    parsed = parse_search(rt, params, ctx.registry, strict=_strict(req))
    # Under a policy, resources come back whole, are post-checked, and only then trimmed by
    # _summary/_elements (a trimmed resource cannot be checked).
    trim = (
        policy.restricted and parsed.summary != "count" and bool(parsed.summary or parsed.elements)
    )
    run = replace(parsed, summary=None, elements=()) if trim else parsed
    type_filter: Callable[[str], dict[str, Any]] | None = (
        policy.type_filter if policy.restricted else None
    )
    if compartment is not None and not policy.sees_compartment(compartment):
        # Another patient's compartment holds nothing for this token, whatever it shares
        # with the token's own (a Group listing both): as if that patient did not exist.
        type_filter = _nothing
    page = await run_search(
        ctx.store,
        ctx.registry,
        run,
        compartment=compartment,
        type_filter=type_filter,
        max_time_ms=ctx.settings.query_max_time_ms,
        # A reference value naming a patient the token may not look into matches nothing.
        shown_patient=policy.sees_compartment if policy.restricted else None,
    )
    if policy.restricted:
        indexer, stored = ctx.store.indexer, page.stored_access
        page.resources = [
            r
            for r in page.resources
            if screen(policy, indexer, r, where="search", stored=stored.get(_key(r)))
        ]
        page.included = [
            r
            for r in page.included
            if screen(policy, indexer, r, where="include", stored=stored.get(_key(r)))
        ]
    if trim:
        page.resources = [apply(r, parsed.summary, parsed.elements) for r in page.resources]
        page.included = [apply(r, parsed.summary, parsed.elements) for r in page.included]
    # The bundle adds the compartment to its links itself; fullUrls stay at the base.
    return FhirResponse(status=200, body=searchset_bundle(page, parsed, ctx.base_url))


def _key(resource: dict[str, Any]) -> str:
    return f"{resource.get('resourceType')}/{resource.get('id')}"
