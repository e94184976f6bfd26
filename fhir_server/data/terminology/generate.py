"""Regenerate `terminology.json.gz` from HL7's npm package.

    npm pack hl7.fhir.r4.examples@4.0.1 && tar xzf hl7.fhir.r4.examples-4.0.1.tgz
    python fhir_server/data/terminology/generate.py package/

Reads `Bundle-valuesets.json`, `Bundle-v2-valuesets.json` and `Bundle-v3-valuesets.json`.
Keeps, per complete CodeSystem, its codes and their parents (concept nesting) and whether the
hierarchy means subsumption; per ValueSet, its compose reduced to what expansion reads. Value
sets that cannot be expanded without a terminology server are kept as `url -> reason` only.
"""

import asyncio
import gzip
import json
import sys
from pathlib import Path
from typing import Any

from fhir_server.errors import FhirError, NotSupported, TooCostly
from fhir_server.search.valuesets import Expander, Terminology

BUNDLES = ("Bundle-valuesets.json", "Bundle-v2-valuesets.json", "Bundle-v3-valuesets.json")


def _parents(concepts: list[dict[str, Any]], parent: str | None, out: dict[str, list[str]]) -> None:
    for c in concepts:
        ps = out.setdefault(c["code"], [])
        if parent is not None and parent not in ps:
            ps.append(parent)
        _parents(c.get("concept", []), c["code"], out)


def _item(item: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "system" in item:
        out["system"] = item["system"]
    if "concept" in item:
        out["concept"] = [{"code": c["code"]} for c in item["concept"]]
    if "filter" in item:
        out["filter"] = [{k: f[k] for k in ("property", "op", "value")} for f in item["filter"]]
    if "valueSet" in item:
        out["valueSet"] = item["valueSet"]
    return out


async def main(pkg: Path) -> None:
    resources = [
        e["resource"] for b in BUNDLES for e in json.loads((pkg / b).read_text())["entry"]
    ]
    codesystems: dict[str, Any] = {}
    for cs in resources:
        if cs["resourceType"] != "CodeSystem" or cs.get("content") != "complete":
            continue
        parents: dict[str, list[str]] = {}
        _parents(cs.get("concept", []), None, parents)
        entry: dict[str, Any] = {"c": parents}
        if cs.get("hierarchyMeaning") not in (None, "is-a"):
            entry["h"] = False
        codesystems[cs["url"]] = entry
    valuesets: dict[str, Any] = {}
    for vs in resources:
        if vs["resourceType"] == "ValueSet":
            compose = vs.get("compose", {})
            reduced = {
                part: [_item(i) for i in compose.get(part, [])]
                for part in ("include", "exclude")
                if compose.get(part)
            }
            valuesets[vs["url"]] = {"compose": reduced}
    term = Terminology.from_json({"codesystems": codesystems, "valuesets": valuesets})

    async def nothing_stored(url: str) -> None:
        return None

    expander = Expander(nothing_stored, term)
    unsupported: dict[str, str] = {}
    for url in list(valuesets):
        try:
            await expander.expand(url)
        except TooCostly:
            pass  # expandable, only too large to search for at once
        except (NotSupported, FhirError) as e:
            unsupported[url] = e.diagnostics
    for url in unsupported:
        del valuesets[url]
    data = {"codesystems": codesystems, "valuesets": valuesets, "unsupported": unsupported}
    raw = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    out = Path(__file__).parent / "terminology.json.gz"
    out.write_bytes(gzip.compress(raw, compresslevel=9, mtime=0))
    print(f"{len(codesystems)} code systems, {len(valuesets)} value sets expandable, "
          f"{len(unsupported)} not; {len(raw)} bytes, {out.stat().st_size} gzipped")


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
