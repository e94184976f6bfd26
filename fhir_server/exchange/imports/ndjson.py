"""Transaction bundles as Bulk Data NDJSON, one file per type (for partners' tooling, the
tests and the benchmark): each entry's resource keeps its id, and references to another
entry's `urn:uuid:` fullUrl become `Type/id`, as a Bulk Data file carries them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

Doc = dict[str, Any]


def _rewrite(value: Any, refs: dict[str, str]) -> Any:
    if isinstance(value, dict):
        out = {k: _rewrite(v, refs) for k, v in value.items()}
        ref = out.get("reference")
        if isinstance(ref, str) and ref in refs:
            out["reference"] = refs[ref]
        return out
    if isinstance(value, list):
        return [_rewrite(v, refs) for v in value]
    return value


def by_type(bundles: Iterable[Doc]) -> dict[str, list[Doc]]:
    """Every entry's resource, references resolved, grouped by resource type."""
    out: dict[str, list[Doc]] = {}
    for bundle in bundles:
        entries = [e for e in bundle.get("entry") or [] if isinstance(e.get("resource"), dict)]
        refs = {
            e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}"
            for e in entries
            if isinstance(e.get("fullUrl"), str) and e["resource"].get("id")
        }
        for e in entries:
            res = _rewrite(e["resource"], refs)
            out.setdefault(res["resourceType"], []).append(res)
    return out


def lines(resources: Iterable[Doc]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in resources)
