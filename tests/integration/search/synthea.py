"""Load the Synthea bundles as stored resources: `urn:uuid` references rewritten to `Type/id`."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fhir_server.search.extract import compartments, index_entries
from fhir_server.search.registry import Registry

BASE_LU = datetime(2024, 1, 1, tzinfo=UTC)
SYNTHEA = Path(__file__).resolve().parents[2] / "data" / "synthea-r4"  # vendored .json.gz


def _rewrite(obj: Any, ids: dict[str, str]) -> Any:
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k == "reference" and isinstance(v, str) and v in ids:
                out[k] = ids[v]
            else:
                out[k] = _rewrite(v, ids)
        return out
    if isinstance(obj, list):
        return [_rewrite(x, ids) for x in obj]
    return obj


def load_resources() -> list[dict[str, Any]]:
    resources: list[dict[str, Any]] = []
    for path in sorted(SYNTHEA.glob("*.json.gz")):
        bundle = json.loads(gzip.decompress(path.read_bytes()))
        ids = {}
        for e in bundle["entry"]:
            r = e["resource"]
            r.setdefault("id", e["fullUrl"].split(":")[-1])
            ids[e["fullUrl"]] = f"{r['resourceType']}/{r['id']}"
        resources += [_rewrite(e["resource"], ids) for e in bundle["entry"]]
    # Organizations and Practitioners recur across bundles (conditional creates): keep one.
    unique = {f"{r['resourceType']}/{r['id']}": r for r in reversed(resources)}
    return sorted(unique.values(), key=lambda r: (r["resourceType"], r["id"]))


def to_doc(r: dict[str, Any], registry: Registry, lu: datetime) -> dict[str, Any]:
    r = {**r, "meta": {**r.get("meta", {}), "versionId": "1", "lastUpdated": lu.isoformat()}}
    comp = compartments(r, registry)
    return {
        "_id": f"{r['resourceType']}/{r['id']}",
        "rt": r["resourceType"],
        "id": r["id"],
        "vid": 1,
        "lu": lu.replace(tzinfo=None),
        "res": r,
        "comp": comp,
        "sk": comp[0] if comp else f"{r['resourceType']}/{r['id']}",
        "ix": index_entries(r, registry),
    }
