"""Every query shape the engine generates, per parameter type, must plan on an index
(no COLLSCAN) on the Synthea collection (~3,400 documents), and the portal's hot shapes
must be bounded by the patient, not by the resource type.

Explain is read the way each database executes (docs/database.md): MongoDB's explain is its
plan. SecantusDB 0.7.0b3's explain only knows filters its planner bounds whole; for any other
filter its `find` looks up the FIRST top-level clause that an index can answer alone and
checks the rest per document, so that clause's own explain is what runs. A top-level
`$and`/`$or` is a collection scan there.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from fhir_server.search.execute import (
    _Run,
    implied_compartment,
    implies_compartment,
    plan,
    search_filter,
    sort_keys,
    uses_elem_match,
)
from fhir_server.search.parse import Criterion, parse_search
from fhir_server.storage.store import ResourceStore

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
# The portal's hot queries (bench/search.py times them at scale): each must be bounded by the
# patient (the implied or given compartment, or the patient's reference key), never by the
# type alone, and on MongoDB a `_sort` must come from the index, with no blocking SORT.
PORTAL: list[tuple[str, str, list[tuple[str, str]], str | None]] = [
    (
        "lab Observations newest first",
        "Observation",
        [("patient", PID), ("category", "laboratory"), ("_sort", "-date"), ("_count", "50")],
        None,
    ),
    (
        "vital signs oldest first",
        "Observation",
        [("subject", f"Patient/{PID}"), ("category", "vital-signs"), ("_sort", "date")],
        None,
    ),
    ("upcoming Appointments", "Appointment", [("patient", PID), ("date", "ge2020-01-01")], None),
    ("Encounters newest first", "Encounter", [("patient", PID), ("_sort", "-date")], None),
    (
        "active MedicationRequests",
        "MedicationRequest",
        [("subject", f"Patient/{PID}"), ("status", "active")],
        None,
    ),
    ("DiagnosticReports", "DiagnosticReport", [("patient", PID)], None),
    ("compartment + code", "Observation", [("code", "8302-2")], f"Patient/{PID}"),
    (
        "compartment + date sort",
        "Observation",
        [("category", "laboratory"), ("_sort", "-date")],
        f"Patient/{PID}",
    ),
]


async def _filters(
    db: Any, registry: Any, rt: str | None, params: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    """The main filter (as `run_search` builds it) plus the sub-queries of chains and _has."""
    req = parse_search(rt, params, registry)
    run = _Run(ResourceStore(db), registry, None, await uses_elem_match(db))
    out = [await search_filter(db, registry, req)]
    for c in req.criteria:
        for t, sub in c.chain:
            out.append({"rt": t, **(await run.criterion(t, sub))})
        if c.has:
            out.append(
                {"rt": c.has.source_type, **(await run.criterion(c.has.source_type, c.has.inner))}
            )
    return out


async def _explain(db: Any, filt: dict[str, Any], sort: list[tuple[str, int]]) -> str:
    """The winning plan only: MongoDB also lists the plans it rejected, which may scan or
    sort."""
    out = await db["resources"].find(filt).sort(sort).limit(51).explain()
    return json.dumps(out.get("queryPlanner", {}).get("winningPlan", out), default=str)


async def executed(
    db: Any, filt: dict[str, Any], sort: list[tuple[str, int]]
) -> tuple[str, str | None]:
    """(what runs, the top-level field its index lookup is bounded by: None = the whole
    filter) after `plan`, as the database executes it (see the module's docstring)."""
    secantus = not await uses_elem_match(db)
    filt, hint = plan(filt, secantus)
    assert hint is None  # hints walk whole indexes on SecantusDB; MongoDB needs none
    whole = await _explain(db, filt, sort)
    if not secantus or "COLLSCAN" not in whole:
        return whole, None
    if any(k.startswith("$") for k in filt):
        return whole, None
    for field, clause in filt.items():
        alone = await _explain(db, {field: clause}, sort)
        if "IXSCAN" in alone:
            return alone, field
    return whole, None


@pytest.mark.parametrize(("name", "rt", "params"), SHAPES, ids=[s[0] for s in SHAPES])
async def test_no_collection_scan(
    db: Any, registry: Any, name: str, rt: str | None, params: list[tuple[str, str]]
) -> None:
    sort = sort_keys(parse_search(rt, params, registry))
    for filt in await _filters(db, registry, rt, params):
        explained, _ = await executed(db, filt, sort)
        assert "COLLSCAN" not in explained, f"{name}: {filt} scans the collection"
        assert "IXSCAN" in explained


@pytest.mark.parametrize(
    ("name", "rt", "params", "compartment"), PORTAL, ids=[p[0] for p in PORTAL]
)
async def test_portal_queries_are_bounded_by_the_patient(
    db: Any,
    registry: Any,
    name: str,
    rt: str,
    params: list[tuple[str, str]],
    compartment: str | None,
) -> None:
    req = parse_search(rt, params, registry)
    filt = await search_filter(db, registry, req, compartment)
    sort = sort_keys(req)
    explained, field = await executed(db, filt, sort)
    assert "COLLSCAN" not in explained, f"{name}: {filt} scans the collection"
    assert "IXSCAN" in explained
    if await uses_elem_match(db):
        # MongoDB: the patient's compartment is in the filter, the chosen index is bounded
        # by the patient, and it serves the sort.
        assert filt.get("comp") == f"Patient/{PID}", f"{name}: no compartment clause in {filt}"
        assert '"comp"' in explained or "ix.k" in explained
        if req.sort:
            assert '"SORT"' not in explained, f"{name}: blocking sort in {explained}"
    elif field is None:
        # SecantusDB serves the whole filter from one index: only `{rt, ix.k: key}` on
        # `(rt, ix.k, _id)`, where `plan` leaves the compartment out on purpose.
        assert set(filt) == {"rt", "ix.k"}, f"{name}: {filt}"
        assert "rt_ix_k" in explained
    else:
        # SecantusDB: the lookup is the patient's (compartment or reference key), never
        # `rt` alone, which is every resource of the type.
        assert filt.get("comp") == f"Patient/{PID}", f"{name}: no compartment clause in {filt}"
        assert field in ("comp", "ix.k"), f"{name}: bounded by {field} only"
        if field == "ix.k":
            assert PID in json.dumps(filt["ix.k"]), f"{name}: bounded by a key of any patient"


async def test_sort_by_date_walks_the_compartment_index_both_ways(db: Any, registry: Any) -> None:
    """`_sort=date` and `_sort=-date` sort `_id` the same way as the date, so one ascending
    `(comp, rt, ix.o.date, _id)` index serves both, and the pages agree with a sort in memory."""
    for value, order in (("date", 1), ("-date", -1)):
        req = parse_search(rt := "Observation", [("patient", PID), ("_sort", value)], registry)
        assert sort_keys(req) == [("ix.o.date", order), ("_id", order)]
        filt, _ = plan(await search_filter(db, registry, req), not await uses_elem_match(db))
        got = [d["_id"] async for d in db["resources"].find(filt, {"_id": 1}).sort(sort_keys(req))]
        every = [
            d
            async for d in db["resources"].find(
                {"rt": rt, "ix.k": f"patient=Patient/{PID}"}, {"_id": 1, "ix.o": 1}
            )
        ]
        assert len(got) == len(every) > 50

        def key(d: dict[str, Any]) -> tuple[str, str]:
            return (d.get("ix", {}).get("o", {}).get("date") or "", d["_id"])

        assert got == [d["_id"] for d in sorted(every, key=key, reverse=order == -1)]


async def test_implied_compartment_never_narrows_an_answer(db: Any, registry: Any) -> None:
    """For every stored reference key, the compartment that `implied_compartment` would add
    to a search for that key is in the document's `comp`: the clause changes no answer."""
    checked = 0
    async for d in db["resources"].find({}, {"rt": 1, "comp": 1, "ix.k": 1}):
        for k in d.get("ix", {}).get("k", []):
            code = k.partition("=")[0]
            p = registry.get(d["rt"], code)
            if p is None or p.type != "reference":
                continue
            crit = Criterion(name=code, code=code, type="reference")
            target = implied_compartment(registry, d["rt"], crit, {"ix.k": k})
            if target is not None:
                assert target in d["comp"], (d["_id"], k, d["comp"])
                checked += 1
    assert checked > 3000
    assert implies_compartment(registry, "Observation", "patient")  # subject, narrowed
    assert implies_compartment(registry, "Appointment", "patient")  # actor, narrowed
    assert not implies_compartment(registry, "Observation", "focus")  # any resource
    assert not implies_compartment(registry, "Encounter", "participant")  # practitioners


async def test_cursor_page_uses_index(db: Any, registry: Any) -> None:
    from fhir_server.search import cursor

    sort = [("_id", 1)]
    filt = {"rt": "Observation", "ix.k": "code=8302-2", **cursor.boundary(sort, ["Observation/5"])}
    explained, _ = await executed(db, filt, sort)
    assert "COLLSCAN" not in explained


# Token modifiers (`:of-type`, `:in`, `:above`, `:below`; `:not-in` is a `$nin` like `:not`)
# and the value-set lookup of `:in`.
MODIFIER_SHAPES: list[tuple[str, str | None, list[tuple[str, str]]]] = [
    (
        "token :of-type",
        "Patient",
        [("identifier:of-type", "http://terminology.hl7.org/CodeSystem/v2-0203|MR|x")],
    ),
    (
        "token :in (vendored value set)",
        "Encounter",
        [("class:in", "http://terminology.hl7.org/ValueSet/v3-ActEncounterCode")],
    ),
    (
        "token :below",
        "Condition",
        [
            (
                "clinical-status:below",
                "http://terminology.hl7.org/CodeSystem/condition-clinical|active",
            )
        ],
    ),
    (
        "token :above",
        "Encounter",
        [("class:above", "http://terminology.hl7.org/CodeSystem/v3-ActCode|AMB")],
    ),
    ("_text one word", "CarePlan", [("_text", "fracture")]),
    ("_content two words", "Patient", [("_content", "abdul koepp")]),
    ("_content system-level", None, [("_content", "hospital")]),
]


@pytest.mark.parametrize(
    ("name", "rt", "params"), MODIFIER_SHAPES, ids=[s[0] for s in MODIFIER_SHAPES]
)
async def test_modifier_shapes_use_an_index(
    db: Any, registry: Any, name: str, rt: str | None, params: list[tuple[str, str]]
) -> None:
    await test_no_collection_scan(db, registry, name, rt, params)


async def test_value_set_lookup_uses_an_index(db: Any) -> None:
    filt = {"rt": "ValueSet", "ix.k": "url=http://example.org/fhir/ValueSet/x"}
    explained = json.dumps(await db["resources"].find(filt).limit(20).explain(), default=str)
    assert "COLLSCAN" not in explained and "IXSCAN" in explained


async def test_upgrade_replaces_the_compartment_index(db: Any) -> None:
    """A database made before `comp_rt_date` keeps no `comp_rt` beside it after start-up."""
    from fhir_server.db.client import ensure_indexes
    from fhir_server.search.indexes import index_models

    old = db.client["explain_upgrade"]
    try:
        await old["resources"].create_index([("comp", 1), ("rt", 1)], name="comp_rt")
        await ensure_indexes(old, index_models())
        names = {ix["name"] async for ix in await old["resources"].list_indexes()}
        assert "comp_rt_date" in names
        assert "comp_rt" not in names
        assert len(names - {"_id_"}) == 9
    finally:
        await db.client.drop_database("explain_upgrade")
