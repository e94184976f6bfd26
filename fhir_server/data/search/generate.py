"""Regenerate the vendored search definitions from HL7's npm package.

    npm pack hl7.fhir.r4.examples@4.0.1 && tar xzf hl7.fhir.r4.examples-4.0.1.tgz
    python fhir_server/data/search/generate.py package/

Keeps only the fields the search engine reads; the definitions themselves are unchanged.
"""

import json
import sys
from pathlib import Path

KEEP = ("url", "code", "base", "type", "expression", "target", "modifier", "comparator",
        "multipleOr", "multipleAnd", "chain", "component", "description")


def main(pkg: Path) -> None:
    here = Path(__file__).parent
    bundle = json.loads((pkg / "Bundle-searchParams.json").read_text())
    params = [{k: e["resource"][k] for k in KEEP if k in e["resource"]} for e in bundle["entry"]]
    for p in params:
        for c in p.get("component", []):
            c.pop("extension", None)
    (here / "search-parameters.json").write_text(json.dumps(params, separators=(",", ":")))
    comp = json.loads((pkg / "CompartmentDefinition-patient.json").read_text())
    out = {"url": comp["url"], "resource": {r["code"]: r.get("param", []) for r in comp["resource"]}}
    (here / "compartment-patient.json").write_text(json.dumps(out, separators=(",", ":")))
    # Summary and mandatory top-level elements per resource type, for _summary.
    sds = json.loads((pkg / "Bundle-resources.json").read_text())
    summary: dict[str, dict[str, list[str]]] = {}
    for e in sds["entry"]:
        sd = e["resource"]
        if sd.get("resourceType") != "StructureDefinition" or sd.get("kind") != "resource":
            continue
        if sd.get("derivation") == "constraint":
            continue
        t = sd["type"]
        s, m = [], []
        for el in sd["snapshot"]["element"]:
            parts = el["path"].split(".")
            if len(parts) != 2:
                continue
            name = parts[1].replace("[x]", "")
            if el.get("isSummary"):
                s.append(name)
            if el.get("min", 0) > 0:
                m.append(name)
        summary[t] = {"summary": s, "mandatory": m}
    (here / "summary-elements.json").write_text(json.dumps(summary, separators=(",", ":")))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
