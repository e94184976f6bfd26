"""`_summary` and `_elements` (https://hl7.org/fhir/R4/search.html#summary,
https://hl7.org/fhir/R4/search.html#elements).

A trimmed resource is marked with the SUBSETTED tag, as the spec requires.
"""

from __future__ import annotations

from typing import Any

from fhir_server.search.registry import summary_elements

SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
    "display": "Resource content is not complete",
}
ALWAYS = ("resourceType", "id", "meta")


def _keep(resource: dict[str, Any], names: set[str]) -> dict[str, Any]:
    out = {}
    for key, v in resource.items():
        base = key.lstrip("_")
        # A choice element `value[x]` is listed as `value`: match `valueQuantity` too.
        stem = next((n for n in names if base.startswith(n) and base[len(n) :][:1].isupper()), None)
        if base in names or stem is not None:
            out[key] = v
    return out


def _mark(resource: dict[str, Any]) -> dict[str, Any]:
    meta = dict(resource.get("meta") or {})
    tags = list(meta.get("tag") or [])
    if not any(t.get("code") == "SUBSETTED" for t in tags if isinstance(t, dict)):
        tags.append(SUBSETTED)
    meta["tag"] = tags
    return {**resource, "meta": meta}


def apply(
    resource: dict[str, Any], summary: str | None, elements: tuple[str, ...]
) -> dict[str, Any]:
    """The resource as `_summary` / `_elements` ask; unchanged when neither is set."""
    rt = resource.get("resourceType", "")
    info = summary_elements().get(rt, {"summary": [], "mandatory": []})
    if summary == "true":
        kept = _keep(resource, set(ALWAYS) | set(info["summary"]))
    elif summary == "text":
        kept = _keep(resource, set(ALWAYS) | {"text"} | set(info["mandatory"]))
    elif summary == "data":
        kept = {k: v for k, v in resource.items() if k != "text"}
    elif elements:
        names = {e.split(".", 1)[0] for e in elements}
        kept = _keep(resource, set(ALWAYS) | names | set(info["mandatory"]))
    else:
        return resource
    return _mark(kept)
