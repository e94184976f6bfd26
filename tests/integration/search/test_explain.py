"""Every query shape the engine generates, per parameter type and modifier, must plan on an
index (no COLLSCAN) on the Synthea collection (~3,400 documents), and the portal's hot shapes
must be bounded by the patient, not by the resource type.

The queries checked are those the search really sends (`run_search` on a recording store:
the main query, its total, the sub-queries of chains, `_has`, `:in` and includes, and on
SecantusDB the looser range lookups of secantus_plan.py). Explain is read the way each
database executes (docs/database.md): MongoDB's explain is its plan. SecantusDB 0.7.0b3's
explain only knows filters its planner bounds whole; for any other filter its `find` looks
up the FIRST top-level clause that an index can answer alone and checks the rest per
document, so that clause's own explain is what runs, and it must not be `rt` alone (every
resource of the type). A top-level `$and`/`$or` is a collection scan there.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from fhir_server.portal.scheduling import slots
from fhir_server.search import effective
from fhir_server.search.execute import (
    implied_compartment,
    implies_compartment,
    plan,
    run_search,
    search_filter,
    sort_keys,
    uses_elem_match,
)
from fhir_server.search.parse import Criterion, parse_search
from fhir_server.storage.store import ResourceStore

PID = "018f428e-34f6-4707-8009-5ad742f901e7"
UCUM = "http://unitsofmeasure.org"
# Every parameter type and every modifier and prefix the engine supports, alone and beside
# other criteria, sorted, and paged (the second page's queries are checked too).
SHAPES: list[tuple[str, str | None, list[tuple[str, str]]]] = [
    ("token code", "Observation", [("code", "8302-2")]),
    (
        "token system|code OR",
        "Observation",
        [("code", "http://loinc.org|8302-2,http://loinc.org|29463-7")],
    ),
    ("token system|", "Observation", [("code", "http://loinc.org|")]),
    ("token :text", "Observation", [("code:text", "body")]),
    ("token :text sorted, paged", "Observation", [("code:text", "body"), ("_sort", "-date")]),
    ("token :missing", "Observation", [("value-quantity:missing", "true")]),
    ("token :not beside a code", "Observation", [("code", "8302-2"), ("status:not", "final")]),
    ("token _tag", "Observation", [("_tag", "https://smarthealthit.org/tags|synthea-5-2019")]),
    ("token _security", "Observation", [("_security", "R")]),
    ("token _id", "Observation", [("_id", "abc")]),
    ("uri _profile", "Observation", [("_profile", "http://x/p")]),
    ("uri :below", "Observation", [("_profile:below", "http://x/")]),
    ("uri :above", "Observation", [("_profile:above", "http://x/p/q")]),
    ("string", "Patient", [("name", "ko")]),
    ("string family", "Patient", [("family", "Koepp")]),
    ("string OR", "Patient", [("family", "Koepp,Abbott")]),
    ("string AND string", "Patient", [("given", "a"), ("family", "k")]),
    ("string + token", "Patient", [("family", "k"), ("gender", "female")]),
    ("string + date", "Patient", [("name", "a"), ("birthdate", "ge1960")]),
    ("string sorted, paged", "Patient", [("name", "a"), ("_sort", "family"), ("_count", "2")]),
    ("string :exact", "Patient", [("family:exact", "Koepp")]),
    ("string :contains", "Patient", [("name:contains", "epp")]),
    ("string :contains + token", "Patient", [("name:contains", "a"), ("gender", "male")]),
    ("date eq day", "Observation", [("date", "2015-05-28")]),
    ("date eq instant", "Observation", [("date", "2015-05-28T10:00:00Z")]),
    ("date OR", "Observation", [("date", "2014,2015-03")]),
    ("date ge", "Observation", [("date", "ge2019-01-01")]),
    ("date gt, paged", "Observation", [("date", "gt2019-06-01"), ("_sort", "date")]),
    ("date lt", "Observation", [("date", "lt2012-01-01")]),
    ("date le", "Observation", [("date", "le2011-06-01")]),
    ("date sa", "Encounter", [("date", "sa2015-01-01")]),
    ("date eb", "Encounter", [("date", "eb2012-01-01")]),
    ("date ap", "Encounter", [("date", "ap2015-01-01")]),
    ("date ne", "Condition", [("onset-date", "ne2015")]),
    ("date AND range", "Observation", [("date", "ge2014-01-01"), ("date", "lt2015-01-01")]),
    ("_lastUpdated", "Observation", [("_lastUpdated", "gt2024-01-01")]),
    ("_lastUpdated ne", "Observation", [("_lastUpdated", "ne2024-01-01")]),
    ("number", "RiskAssessment", [("probability", "gt0.5")]),
    ("number eq", "RiskAssessment", [("probability", "0.5")]),
    ("number ne", "RiskAssessment", [("probability", "ne0.5")]),
    ("quantity", "Observation", [("value-quantity", "gt100")]),
    ("quantity ucum", "Observation", [("value-quantity", f"le5.4|{UCUM}|mg")]),
    ("quantity |code", "Observation", [("value-quantity", "lt5||mmol/L")]),
    ("quantity ap", "Observation", [("value-quantity", "ap100")]),
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
    ("reference + date", "Observation", [("subject", f"Patient/{PID}"), ("date", "ge2015")]),
    ("chain", "Observation", [("patient.gender", "female")]),
    ("chain on a string", "Observation", [("patient.family", "Koepp")]),
    ("_has", "Patient", [("_has:Observation:patient:code", "39156-5")]),
    ("_include", "Observation", [("code", "8302-2"), ("_include", "Observation:subject")]),
    ("_revinclude", "Patient", [("family", "k"), ("_revinclude", "Encounter:patient")]),
    ("token + date", "Observation", [("code", "8302-2"), ("date", "ge2015")]),
    ("sort by param", "Observation", [("code", "8302-2"), ("_sort", "-date")]),
    ("system-level _tag", None, [("_tag", "synthea-5-2019")]),
    # Secure messaging (docs/portal.md): threads, a thread's messages, an unread inbox.
    (
        "threads: subject + part-of:missing",
        "Communication",
        [("subject", f"Patient/{PID}"), ("part-of:missing", "true")],
    ),
    (
        "thread messages by sent",
        "Communication",
        [("part-of", "Communication/h"), ("_sort", "sent")],
    ),
    (
        "unread inbox: recipient + received:missing",
        "Communication",
        [("recipient", "CareTeam/pool"), ("received:missing", "true")],
    ),
    ("system-level _type", None, [("_type", "Patient,Organization")]),
]
# A Slot's status as read (an expired hold is free: portal/scheduling/slots.py): each value
# one `$or` branch looked up by its status key, the hold's stored expiry `ak.h` checked beside.
READ_TIME: list[tuple[str, str | None, list[tuple[str, str]]]] = [
    ("Slot status=free", "Slot", [("status", "free")]),
    ("Slot status=free + start", "Slot", [("status", "free"), ("start", "ge2020-01-01")]),
    ("Slot status=busy-tentative", "Slot", [("status", "busy-tentative")]),
    ("Slot status=free,busy paged", "Slot", [("status", "free,busy"), ("_count", "2")]),
]
# Complements match (nearly) every resource of the type: alone they are bounded by the type
# on SecantusDB (a look-up of `rt`, then every document checked), never by a key range.
TYPE_BOUNDED: list[tuple[str, str | None, list[tuple[str, str]]]] = [
    ("token :not alone", "Observation", [("status:not", "final")]),
    (
        "token :not-in alone",
        "Encounter",
        [("class:not-in", "http://terminology.hl7.org/ValueSet/v3-ActEncounterCode")],
    ),
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
    (
        "a patient's message threads",
        "Communication",
        [("subject", f"Patient/{PID}"), ("part-of:missing", "true")],
        None,
    ),
    ("compartment + code", "Observation", [("code", "8302-2")], f"Patient/{PID}"),
    (
        "compartment + date sort",
        "Observation",
        [("category", "laboratory"), ("_sort", "-date")],
        f"Patient/{PID}",
    ),
]


class RecordingStore(ResourceStore):
    """The store as `run_search` uses it, keeping every query it is sent."""

    def __init__(self, db: Any) -> None:
        super().__init__(db)
        self.sent: list[tuple[dict[str, Any], list[tuple[str, int]] | None]] = []

    async def find(  # type: ignore[override]
        self,
        filt: dict[str, Any],
        projection: dict[str, Any] | None = None,
        *,
        sort: list[tuple[str, int]] | None = None,
        limit: int = 0,
        **kw: Any,
    ) -> list[dict[str, Any]]:
        self.sent.append((filt, sort))
        return await super().find(filt, projection, sort=sort, limit=limit, **kw)

    async def count(self, filt: dict[str, Any], **kw: Any) -> int:
        self.sent.append((filt, None))
        return await super().count(filt, **kw)


async def sent_queries(
    db: Any, registry: Any, rt: str | None, params: list[tuple[str, str]]
) -> list[tuple[dict[str, Any], list[tuple[str, int]] | None]]:
    """Every query a search sends: its first page with the total, and its second page."""
    store = RecordingStore(db)
    req = parse_search(rt, params, registry)
    page = await run_search(store, registry, req)
    if page.next_cursor:
        await run_search(store, registry, replace(req, cursor=page.next_cursor))
    return store.sent


async def _explain(db: Any, filt: dict[str, Any], sort: list[tuple[str, int]] | None) -> str:
    """The winning plan only: MongoDB also lists the plans it rejected, which may scan or
    sort."""
    cursor = db["resources"].find(filt)
    if sort:
        cursor = cursor.sort(sort)
    out = await cursor.limit(51).explain()
    return json.dumps(out.get("queryPlanner", {}).get("winningPlan", out), default=str)


async def as_sent(
    db: Any, filt: dict[str, Any], sort: list[tuple[str, int]] | None
) -> tuple[str, str | None]:
    """(what runs, the top-level field its index lookup is bounded by: None = the whole
    filter) for a filter sent as is, as the database executes it (the module's docstring)."""
    whole = await _explain(db, filt, sort)
    if await uses_elem_match(db) or "COLLSCAN" not in whole:
        return whole, None
    if any(k.startswith("$") for k in filt):
        return whole, None
    for field, clause in filt.items():
        alone = await _explain(db, {field: clause}, sort)
        if "IXSCAN" in alone:
            return alone, field
    return whole, None


async def executed(
    db: Any, filt: dict[str, Any], sort: list[tuple[str, int]]
) -> tuple[str, str | None]:
    """`as_sent` after `plan` (the point clause first on SecantusDB)."""
    filt, hint = plan(filt, not await uses_elem_match(db))
    assert hint is None  # hints walk whole indexes on SecantusDB; MongoDB needs none
    return await as_sent(db, filt, sort)


async def check_served(
    db: Any, registry: Any, name: str, rt: str | None, params: list[tuple[str, str]]
) -> set[str | None]:
    """Assert that every query of the search uses an index; the fields they are bounded by."""
    bounds: set[str | None] = set()
    sent = await sent_queries(db, registry, rt, params)
    assert sent, name
    for filt, sort in sent:
        explained, field = await as_sent(db, filt, sort)
        assert "COLLSCAN" not in explained, f"{name}: {filt} scans the collection"
        assert "IXSCAN" in explained or "IDHACK" in explained, f"{name}: {explained}"
        bounds.add(None if set(filt) == {"rt"} else field)
    return bounds


@pytest.mark.parametrize(("name", "rt", "params"), SHAPES, ids=[s[0] for s in SHAPES])
async def test_no_collection_scan(
    db: Any, registry: Any, name: str, rt: str | None, params: list[tuple[str, str]]
) -> None:
    bounds = await check_served(db, registry, name, rt, params)
    # On SecantusDB, a look-up of `rt` alone is every resource of the type, checked one by
    # one: a scan in all but name. Every shape is bounded by a key, a range or an id.
    assert "rt" not in bounds, f"{name}: a query is bounded by the resource type only"


@pytest.mark.parametrize(("name", "rt", "params"), READ_TIME, ids=[s[0] for s in READ_TIME])
async def test_read_time_status_uses_an_index(
    db: Any, registry: Any, name: str, rt: str | None, params: list[tuple[str, str]]
) -> None:
    # As the scheduling workflow registers it at start-up (no app is built here).
    effective.register(slots.RT, slots.STATUS_PARAM, slots.status_filter)
    sent = await sent_queries(db, registry, rt, params)
    assert any(slots.HOLD_FIELD in json.dumps(f, default=str) for f, _ in sent), sent
    bounds = await check_served(db, registry, name, rt, params)
    assert "rt" not in bounds, f"{name}: a query is bounded by the resource type only"


@pytest.mark.parametrize(("name", "rt", "params"), TYPE_BOUNDED, ids=[s[0] for s in TYPE_BOUNDED])
async def test_complements_use_the_type_index(
    db: Any, registry: Any, name: str, rt: str | None, params: list[tuple[str, str]]
) -> None:
    await check_served(db, registry, name, rt, params)


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
