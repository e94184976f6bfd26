"""Searchset Bundle (https://hl7.org/fhir/R4/bundle.html#searchset,
https://hl7.org/fhir/R4/search.html#conformance for the self link).

The self link lists the parameters actually applied (`SearchRequest.used`): parameters
dropped under `Prefer: handling=lenient` do not appear. Paging links carry an opaque
`_cursor` (https://hl7.org/fhir/R4/http.html#paging).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fhir_server.errors import Issue, operation_outcome
from fhir_server.search.execute import SearchPage
from fhir_server.search.parse import SearchRequest


def _url(
    base: str, req: SearchRequest, page: SearchPage, cursor: str | None, link_path: str | None
) -> str:
    path = base.rstrip("/")
    if link_path is not None:
        path += f"/{link_path}"
    elif page.compartment:
        path += f"/{page.compartment}"
    if req.resource_type and link_path is None:
        path += f"/{req.resource_type}"
    params = list(req.used)
    if cursor:
        params.append(("_cursor", cursor))
    return f"{path}?{urlencode(params)}" if params else path


def _entry(base: str, resource: dict[str, Any], mode: str) -> dict[str, Any]:
    return {
        "fullUrl": f"{base.rstrip('/')}/{resource.get('resourceType')}/{resource.get('id')}",
        "resource": resource,
        "search": {"mode": mode},
    }


def searchset_bundle(
    page: SearchPage, req: SearchRequest, base_url: str, *, link_path: str | None = None
) -> dict[str, Any]:
    """`link_path` (below the base) replaces the search's own path in the links: an
    operation answering with a searchset, e.g. `Patient/1/$everything`."""

    def url(cursor: str | None) -> str:
        return _url(base_url, req, page, cursor, link_path)

    links = [{"relation": "self", "url": url(req.cursor)}]
    if page.next_cursor:
        links.append({"relation": "next", "url": url(page.next_cursor)})
    if page.prev_cursor:
        links.append({"relation": "previous", "url": url(page.prev_cursor)})
    entries = [_entry(base_url, r, "match") for r in page.resources]
    entries += [_entry(base_url, r, "include") for r in page.included]
    notes = [
        Issue("informational", f"Parameter {n!r} ignored: {why}", severity="warning")
        for n, _, why in req.dropped
    ]
    notes += [Issue("too-costly", w, severity="warning") for w in page.warnings]
    if notes:
        entries.append({"resource": operation_outcome(notes), "search": {"mode": "outcome"}})
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if page.total is not None:
        bundle["total"] = page.total
    bundle["link"] = links
    bundle["entry"] = entries
    return bundle
