"""Every query shape the engine generates, per parameter type, must plan on an index
(no COLLSCAN) on the Synthea collection (~3,400 documents)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fhir_server.search.execute import _Run, plan, uses_elem_match
from fhir_server.search.parse import parse_search

PID = "018f428e-34f6-4707-8009-5ad742f901e7"
SHAPES: list[tuple[str, str | None, list[tuple[str, str]]]] = [
    ("token code", "Observation", [("code", "8302-2")]),
    (
        "token system|code OR",
        "Observation",
        [("code", "http://loinc.org|8302-2,http://loinc.org|29463-7")],
    ),
    ("token system|", "Observation", [("code", "http://loinc.org|")]),
    ("token :text", "Observation", [("code:text", "body")]),
    ("token :missing", "Observation", [("value-quantity:missing", "true")]),
    ("token _tag", "Observation", [("_tag", "https://smarthealthit.org/tags|synthea-5-2019")]),
    ("token _security", "Observation", [("_security", "R")]),
    ("uri _profile", "Observation", [("_profile", "http://x/p")]),
    ("uri :below", "Observation", [("_profile:below", "http://x/")]),
    ("uri :above", "Observation", [("_profile:above", "http://x/p/q")]),
    ("token _id", "Observation", [("_id", "abc")]),
    ("string", "Patient", [("name", "ko")]),
    ("string :exact", "Patient", [("family:exact", "Koepp")]),
    ("string :contains", "Patient", [("name:contains", "epp")]),
    ("date eq day", "Observation", [("date", "2015-05-28")]),
    ("date eq instant", "Observation", [("date", "2015-05-28T10:00:00Z")]),
    ("date ge", "Observation", [("date", "ge2015-01-01")]),
    ("date lt", "Observation", [("date", "lt2015-01-01")]),
    ("date sa", "Encounter", [("date", "sa2015-01-01")]),
    ("date ap", "Encounter", [("date", "ap2015-01-01")]),
    ("_lastUpdated", "Observation", [("_lastUpdated", "gt2024-01-01")]),
    ("number", "RiskAssessment", [("probability", "gt0.5")]),
    ("quantity", "Observation", [("value-quantity", "gt100")]),
    ("quantity ucum", "Observation", [("value-quantity", "le5.4|http://unitsofmeasure.org|mg")]),
    (
        "composite token$quantity",
        "Observation",
        [("code-value-quantity", "http://loinc.org|8302-2$gt170")],
    ),
    (
        "composite token$token",
        "Observation",
        [("code-value-concept", "http://loinc.org|72166-2$266919005")],
    ),
    ("reference", "Observation", [("subject", f"Patient/{PID}")]),
    ("reference :Type", "Observation", [("subject:Patient", PID)]),
    ("reference :identifier", "Observation", [("subject:identifier", "http://x|1")]),
    ("chain", "Observation", [("patient.gender", "female")]),
    ("_has", "Patient", [("_has:Observation:patient:code", "39156-5")]),
    ("token + date", "Observation", [("code", "8302-2"), ("date", "ge2015")]),
    ("sort by param", "Observation", [("code", "8302-2"), ("_sort", "-date")]),
    ("system-level _tag", None, [("_tag", "synthea-5-2019")]),
    ("system-level _type", None, [("_type", "Patient,Organization")]),
]
# Shapes that SecantusDB's planner scans and MongoDB's does not (docs/search.md).
SECANTUS_SCANS = {"token :not", "reference + code (two keys)", "compartment + code"}


async def _filters(
    db: Any, registry: Any, rt: str | None, params: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    """The main filter plus the sub-query filters of chains and _has."""
    req = parse_search(rt, params, registry)
    run = _Run(db, registry, 5000, None, await uses_elem_match(db))
    out = [await run.base_filter(req, None)]
    for c in req.criteria:
        for t, sub in c.chain:
            out.append({"rt": t, **(await run.criterion(t, sub))})
        if c.has:
            out.append(
                {"rt": c.has.source_type, **(await run.criterion(c.has.source_type, c.has.inner))}
            )
    return out


@pytest.mark.parametrize(("name", "rt", "params"), SHAPES, ids=[s[0] for s in SHAPES])
async def test_no_collection_scan(
    db: Any, registry: Any, name: str, rt: str | None, params: list[tuple[str, str]]
) -> None:
    secantus = not await uses_elem_match(db)
    for filt in await _filters(db, registry, rt, params):
        filt, hint = plan(filt, secantus)
        cur = db["resources"].find(filt).sort([("_id", 1)]).limit(51)
        if hint:
            cur = cur.hint(hint)
        explained = json.dumps(await cur.explain(), default=str)
        assert "COLLSCAN" not in explained, f"{name}: {filt} scans the collection"
        assert "IXSCAN" in explained


async def test_cursor_page_uses_index(db: Any, registry: Any) -> None:
    from fhir_server.search import cursor

    sort = [("_id", 1)]
    filt = {"rt": "Observation", "ix.k": "code=8302-2", **cursor.boundary(sort, ["Observation/5"])}
    explained = json.dumps(
        await db["resources"].find(filt).sort(sort).limit(51).explain(), default=str
    )
    assert "COLLSCAN" not in explained
