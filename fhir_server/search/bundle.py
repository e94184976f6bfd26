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


def _url(base: str, req: SearchRequest, page: SearchPage, cursor: str | None) -> str:
    path = base.rstrip("/")
    if page.compartment:
        path += f"/{page.compartment}"
    if req.resource_type:
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


def searchset_bundle(page: SearchPage, req: SearchRequest, base_url: str) -> dict[str, Any]:
    links = [{"relation": "self", "url": _url(base_url, req, page, req.cursor)}]
    if page.next_cursor:
        links.append({"relation": "next", "url": _url(base_url, req, page, page.next_cursor)})
    if page.prev_cursor:
        links.append({"relation": "previous", "url": _url(base_url, req, page, page.prev_cursor)})
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
