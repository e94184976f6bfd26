"""secantus_plan answers exactly what the strict filter answers (docs/database.md, "Ranges on
SecantusDB"): the same rows in the same order for every limit, the same counts, on the
database's own evaluation of the strict filter (a scan) as the oracle.

A property test on a small collection whose key arrays are drawn from a tiny alphabet (so
ranges, prefixes, boundaries, NUL successors and cross-key false hits are frequent), then the
Synthea collection through `run_search` page by page.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo import AsyncMongoClient

from fhir_server.search import execute, secantus_plan
from fhir_server.search.execute import run_search, uses_elem_match
from fhir_server.search.indexes import index_models
from fhir_server.search.parse import parse_search
from fhir_server.storage.store import ResourceStore

# Bounds: often a stored key itself (inclusive and exclusive bounds then decide), else any.
STORED = sorted(
    {"".join(p) for n in range(5) for p in __import__("itertools").product("ab|", repeat=n)}
)
KEYS = st.one_of(st.sampled_from(STORED), st.text(alphabet="ab|\x00", min_size=0, max_size=4))
FIELDS = ("ix.s", "ix.lo", "ix.hi")
N_DOCS = 120


def _docs() -> list[dict[str, Any]]:
    rnd = __import__("random").Random(7)
    alphabet = "ab|"

    def key() -> str:
        return "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 4)))

    docs = []
    for i in range(N_DOCS):
        docs.append(
            {
                "_id": f"T/{i:03d}",
                "rt": "T" if i % 5 else "U",
                "ix": {
                    "s": sorted({key() for _ in range(rnd.randint(0, 3))}),
                    "lo": sorted({key() for _ in range(rnd.randint(0, 2))}),
                    "hi": sorted({key() for _ in range(rnd.randint(0, 2))}),
                    "k": sorted({f"k={rnd.randint(0, 3)}" for _ in range(rnd.randint(0, 2))}),
                    "o": {"x": key()} if i % 3 else {},
                },
            }
        )
    return docs


@pytest.fixture(scope="module")
async def small(mongo_uri: str) -> Any:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri)
    if await uses_elem_match(client["secantus_plan_props"]):
        pytest.skip("secantus_plan runs on SecantusDB only")
    d = client["secantus_plan_props"]
    await d["resources"].drop()
    await d["resources"].create_indexes(index_models())
    await d["resources"].insert_many(_docs())
    yield d
    await client.drop_database("secantus_plan_props")
    await client.close()


OPS = st.sampled_from(["$gt", "$gte", "$lt", "$lte"])


@st.composite
def elem_range(draw: Any) -> dict[str, Any]:
    ops = draw(st.lists(OPS, min_size=1, max_size=2, unique=True))
    return {"$elemMatch": {op: draw(KEYS) for op in ops}}


@st.composite
def clause(draw: Any) -> dict[str, Any]:
    kind = draw(st.sampled_from(["range", "range", "regex", "key", "nin"]))
    if kind == "range":
        return {draw(st.sampled_from(FIELDS)): draw(elem_range())}
    if kind == "regex":
        head, tail = draw(KEYS), draw(KEYS)
        return {"ix.s": {"$regex": f"^{re.escape(head)}.*{re.escape(tail)}"}}
    if kind == "key":
        return {"ix.k": f"k={draw(st.integers(0, 4))}"}
    return {"ix.k": {"$nin": [f"k={draw(st.integers(0, 4))}"]}}


@st.composite
def filters(draw: Any) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"rt": "T"}]
    for c in draw(st.lists(clause(), min_size=1, max_size=3)):
        (field,) = c
        if any(field in p for p in parts):
            continue
        parts.append(c)
    if draw(st.booleans()):
        parts.append({"$or": [draw(clause()) for _ in range(draw(st.integers(1, 3)))]})
    if draw(st.booleans()):
        parts.append({"_id": {draw(OPS): f"T/{draw(st.integers(0, N_DOCS)):03d}"}})
    out: dict[str, Any] = {}
    for p in parts:
        out.update(p)
    if draw(st.booleans()) and "$or" in out:
        # A second `$or` (the access policy's beside a cursor's): joined by `$and`.
        second = {"$or": [draw(clause()) for _ in range(draw(st.integers(1, 2)))]}
        return {"$and": [out, second]}
    return out


SORTS = st.sampled_from([None, [("_id", 1)], [("_id", -1)], [("ix.o.x", 1), ("_id", 1)]])


async def _agrees(
    small: Any, filt: dict[str, Any], sort: list[tuple[str, int]] | None, limit: int
) -> None:
    store = ResourceStore(small)
    strict = await store.find(filt, {"_id": 1}, sort=sort, limit=limit)
    got = await secantus_plan.find(store, filt, {"_id": 1}, sort=sort, limit=limit)
    if sort:
        assert [d["_id"] for d in got] == [d["_id"] for d in strict], filt
    elif limit:
        # No order asked: any `limit` of the matches will do, but as many of them.
        every = {d["_id"] for d in await store.find(filt, {"_id": 1})}
        assert len(got) == len(strict) and {d["_id"] for d in got} <= every, filt
    else:
        assert {d["_id"] for d in got} == {d["_id"] for d in strict}, filt
    assert await secantus_plan.count(store, filt) == await store.count(filt), filt


async def test_same_rows_and_counts_as_the_strict_filter(small: Any) -> None:
    @settings(
        max_examples=150,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(filt=filters(), sort=SORTS, limit=st.sampled_from([0, 1, 2, 5, 50]))
    def prop(filt: dict[str, Any], sort: list[tuple[str, int]] | None, limit: int) -> None:
        anyio.from_thread.run(_agrees, small, filt, sort, limit)

    await anyio.to_thread.run_sync(prop)


async def test_rows_keep_only_the_fields_asked_for(small: Any) -> None:
    store = ResourceStore(small)
    filt = {"rt": "T", "ix.s": {"$elemMatch": {"$gte": "a", "$lt": "b"}}}
    rows = await secantus_plan.find(store, filt, {"_id": 1, "ix.o": 1}, limit=5)
    assert rows and all(set(d.get("ix", {})) <= {"o"} for d in rows)


def test_plain_shapes() -> None:
    """What is sent for the family search, and what is left alone."""
    fam = {"rt": "Patient", "ix.s": {"$elemMatch": {"$gte": "family|ko", "$lte": "family|kz"}}}
    assert secantus_plan.plan_queries(fam) == [
        {"rt": "Patient", "ix.s": {"$gte": "family|ko", "$lt": "family|kz\x00"}}
    ]
    keyed = {"rt": "Observation", "ix.k": "code=1", "ix.lo": {"$elemMatch": {"$gt": "d|1"}}}
    assert secantus_plan.plan_queries(keyed) == [
        {"ix.k": "code=1", "rt": "Observation", "ix.lo": {"$elemMatch": {"$gt": "d|1"}}}
    ]
    assert secantus_plan.literal_prefix(f"^{re.escape('name|o.k')}.*x") == "name|o.k"


# Synthea through run_search: every range-shaped parameter type, page by page, against the
# strict filter evaluated by the database itself.
SYNTHEA: list[tuple[str, list[tuple[str, str]]]] = [
    ("Patient", [("family", "Ko")]),
    ("Patient", [("name", "a"), ("_count", "2")]),
    ("Patient", [("name:contains", "ar"), ("_count", "3")]),
    ("Patient", [("family", "ko,ab,sch")]),
    ("Patient", [("given", "a"), ("birthdate", "ge1960"), ("_sort", "-birthdate")]),
    ("Observation", [("code:text", "body"), ("_sort", "-date"), ("_count", "40")]),
    ("Observation", [("value-quantity", "gt100"), ("_count", "60")]),
    ("Observation", [("date", "2015-05-28T10:00:00Z")]),
    ("Observation", [("date", "2014,2015-03"), ("_count", "70")]),
    ("Encounter", [("date", "sa2019-01-01"), ("_sort", "date"), ("_count", "25")]),
    ("Condition", [("onset-date", "ne2015"), ("_count", "80")]),
]


async def test_synthea_pages_and_totals_match_the_strict_filter(db: Any, registry: Any) -> None:
    if await uses_elem_match(db):
        pytest.skip("secantus_plan runs on SecantusDB only")
    store = ResourceStore(db, max_time_ms=60_000)

    for rt, params in SYNTHEA:
        req = parse_search(rt, params, registry)
        ours, want = await run_search(store, registry, req), None
        # The oracle: the same search as MongoDB is asked it (no secantus_plan): SecantusDB
        # evaluates the strict filters itself.
        execute._DIALECT[id(db.client)] = True
        try:
            want = await run_search(store, registry, req)
            pages_want = [[r["id"] for r in want.resources]]
            cur = want.next_cursor
            while cur and len(pages_want) < 4:
                p = await run_search(store, registry, replace(req, cursor=cur))
                pages_want.append([r["id"] for r in p.resources])
                cur = p.next_cursor
        finally:
            execute._DIALECT[id(db.client)] = False
        pages = [[r["id"] for r in ours.resources]]
        cur = ours.next_cursor
        while cur and len(pages) < 4:
            p = await run_search(store, registry, replace(req, cursor=cur))
            pages.append([r["id"] for r in p.resources])
            cur = p.next_cursor
        assert ours.total == want.total, (rt, params)
        assert pages == pages_want, (rt, params)
