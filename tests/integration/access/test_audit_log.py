"""The audit log in its own collection (storage/audit_store.py, profiles/access/audit_log.json).

AuditEvents land in `audit` with only the indexes their searches need and no history
version, never in `resources`; they read, vread and search as AuditEvent under the same
access policy (the patient sees their own, a proxy none, a system client all); clients cannot
write them; `$everything` leaves them out; an older database's events move in at start-up;
and a heavy user's own events no longer sit among the resources his searches read.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from joserfc.jwk import RSAKey

from fhir_server.access.audit import AuditRecord, audit_event
from fhir_server.access.audit_log import load_table, parse_table
from fhir_server.search.execute import uses_elem_match
from fhir_server.search.registry import Registry
from fhir_server.storage.audit_store import prepare_separate
from fhir_server.storage.reindex import reindex
from fhir_server.storage.store import new_id
from tests.integration.access.test_smart_enforcement import Server
from tests.integration.auth.conftest import BACKEND
from tests.integration.auth.test_backend_services import assertion, request_token
from tests.integration.seeded import seeded_server

USER = "openid fhirUser user/*.cruds"
JAMES = "Patient/sponsor-james-carter"
EMMA_ROLE = "spouse"  # James's spouse: a proxy for the children, never for James's log
OBS = "Observation/obs-liam-peanut-ige"
# The indexes the table's parameters need: the reduced keys `ix.q` (tokens, references), the
# date's start (its end and covering keys are looked up by it), `_lastUpdated`, and a
# patient's events newest first (storage/audit_store.py).
AUDIT_INDEXES = {"_id_", "q_id", "lo_id", "lu_id", "comp_date"}


@dataclass
class Env:
    app: Any
    s: Server
    tokens: dict[str, str]

    @property
    def db(self) -> Any:
        return self.app.state.ctx.store.db

    async def flush(self) -> None:
        await self.app.state.audit.flush()

    async def get(self, who: str, url: str, **params: str) -> httpx.Response:
        return await self.s.get(self.tokens[who], url, **params)


@pytest.fixture(scope="module")
async def env(mongo_uri: str) -> AsyncIterator[Env]:
    async with seeded_server(mongo_uri) as (app, http):
        s = Server(http)
        key = RSAKey.import_key(BACKEND["jwk"])
        r = await request_token(s, assertion(key, BACKEND["client_id"], "RS384"))
        assert r.status_code == 200, r.text
        tokens = {"backend": r.json()["access_token"]}
        for role in ("sponsor", EMMA_ROLE):
            tokens[role] = await s.token(role, USER)
        yield Env(app, s, tokens)
        await app.state.audit.flush()


async def test_events_land_in_their_own_collection_with_narrow_indexes(env: Env) -> None:
    assert (await env.get("sponsor", OBS)).status_code == 200
    await env.flush()
    db = env.db
    assert await db.resources.count_documents({"rt": "AuditEvent"}) == 0
    assert await db.history.count_documents({"rt": "AuditEvent"}) == 0
    names = {ix["name"] async for ix in await db.audit.list_indexes()}
    assert names == AUDIT_INDEXES
    doc = await db.audit.find_one({"res.entity.what.reference": OBS})
    assert doc is not None and doc["vid"] == 1 and JAMES in doc["comp"]
    # Keys of the listed parameters only: none of `altid`, `policy`, `source`, no strings.
    served = load_table(Registry.load_default()).search_parameters
    codes = {k.split("=")[0].split(":")[0] for k in doc["ix"]["k"]}
    assert codes <= served and {"patient", "entity", "agent", "subtype"} <= codes
    assert "s" not in doc["ix"]
    assert len(doc["ix"]["k"]) < 45  # was 66 keys in two indexes, plus history


async def test_read_vread_history_and_search_under_the_policy(env: Env) -> None:
    assert (await env.get("sponsor", OBS)).status_code == 200
    await env.flush()
    doc = await env.db.audit.find_one({"res.entity.what.reference": OBS}, sort=[("lu", -1)])
    ref = f"AuditEvent/{doc['id']}"
    # The patient himself: his own events, by read, vread, history and search.
    read = await env.get("sponsor", ref)
    assert read.status_code == 200 and read.json()["id"] == doc["id"]
    assert (await env.get("sponsor", f"{ref}/_history/1")).status_code == 200
    assert (await env.get("sponsor", f"{ref}/_history/2")).status_code == 404
    hist = (await env.get("sponsor", f"{ref}/_history")).json()
    assert [e["request"]["method"] for e in hist["entry"]] == ["POST"]
    own = (await env.get("sponsor", "AuditEvent", patient=JAMES, _count="1000")).json()
    assert ref in {f"AuditEvent/{e['resource']['id']}" for e in own["entry"]}
    newest = await env.get("sponsor", "AuditEvent", patient=JAMES, _sort="-date", _count="5")
    assert newest.status_code == 200, newest.text
    dates = [e["resource"]["recorded"] for e in newest.json()["entry"]]
    assert len(dates) == min(5, len(own["entry"])) and dates == sorted(dates, reverse=True)
    # A proxy sees none of his log (confidentiality R), not even by id: only her own.
    assert (await env.get(EMMA_ROLE, ref)).status_code == 404
    proxy = (await env.get(EMMA_ROLE, "AuditEvent", patient=JAMES)).json()
    assert proxy["total"] == 0
    hers = (await env.get(EMMA_ROLE, "AuditEvent", _count="1000")).json()
    named = {
        e["what"]["reference"]
        for x in hers.get("entry", [])
        for e in x["resource"].get("entity", [])
        if "what" in e
    }
    assert JAMES not in named and OBS not in named
    # A system client sees the whole log, by the privacy officer's queries too.
    await env.flush()
    everything = await env.db.audit.count_documents({})
    system = (await env.get("backend", "AuditEvent", _summary="count")).json()
    assert system["total"] >= everything
    failed = await env.get("backend", "AuditEvent", outcome="4", date="ge2020-01-01")
    assert failed.status_code == 200
    assert (await env.get("backend", "AuditEvent", _id=doc["id"])).json()["total"] == 1
    by_type = await env.get("backend", "", _type="AuditEvent", _id=doc["id"])
    assert by_type.json()["total"] == 1


async def test_searches_the_log_does_not_index_are_refused(env: Env) -> None:
    for params in (
        {"altid": "x"},  # a parameter the table does not list
        {"type:text": "rest"},  # a modifier whose keys the log does not keep
        {"agent:missing": "false"},  # nor these
        {"_sort": "source"},
    ):
        r = await env.get("backend", "AuditEvent", **params)
        assert r.status_code == 400, (params, r.text)
        assert r.json()["issue"][0]["code"] == "not-supported"
    mixed = await env.get("backend", "", _type="AuditEvent,Patient")
    assert mixed.status_code == 400 and mixed.json()["issue"][0]["code"] == "not-supported"


async def test_clients_cannot_write_the_log(env: Env) -> None:
    event = {**audit_event(AuditRecord("GET", ["Patient"], status=200)), "id": "client-made"}
    http = env.s.http
    auth = {"Authorization": f"Bearer {env.tokens['backend']}"}
    for method, url in (
        ("POST", "/fhir/AuditEvent"),
        ("PUT", "/fhir/AuditEvent/client-made"),
        ("DELETE", "/fhir/AuditEvent/client-made"),
        ("PUT", "/fhir/AuditEvent?outcome=0"),
    ):
        body = None if method == "DELETE" else event
        r = await http.request(method, url, json=body, headers=auth)
        assert r.status_code == 405, (method, url, r.text)
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"resource": event, "request": {"method": "POST", "url": "AuditEvent"}}],
    }
    r = await http.post("/fhir", json=bundle, headers=auth)
    assert r.status_code == 200, r.text
    assert r.json()["entry"][0]["response"]["status"].startswith("405")
    await env.flush()
    assert await env.db.audit.count_documents({"id": "client-made"}) == 0
    assert await env.db.resources.count_documents({"rt": "AuditEvent"}) == 0
    # The CapabilityStatement says so, and lists the parameters the log is searched by.
    meta = (await http.get("/fhir/metadata")).json()
    (entry,) = [r for r in meta["rest"][0]["resource"] if r["type"] == "AuditEvent"]
    codes = {i["code"] for i in entry["interaction"]}
    assert codes == {"read", "vread", "history-instance", "search-type", "history-type"}
    served = load_table(Registry.load_default()).search_parameters
    assert {p["name"] for p in entry["searchParam"]} == served


async def test_everything_leaves_the_log_out(env: Env) -> None:
    # James's compartment holds hundreds of events by now; his record holds none of them.
    await env.flush()
    assert await env.db.audit.count_documents({"comp": JAMES}) > 0
    r = await env.get("sponsor", f"{JAMES}/$everything", _count="1000")
    assert r.status_code == 200, r.text
    types = {e["resource"]["resourceType"] for e in r.json()["entry"]}
    assert "Patient" in types and "AuditEvent" not in types


async def test_a_heavy_users_events_stay_out_of_his_searches(env: Env) -> None:
    db = env.db
    before = await db.resources.count_documents({"comp": JAMES})
    logged = await db.audit.count_documents({"comp": JAMES})
    for _ in range(30):
        assert (await env.get("sponsor", "Patient", name="x")).status_code == 200
    await env.flush()
    # Every request added an event to his compartment, none to the resources his
    # searches read: `Patient?name=x` examines what it did before.
    assert await db.audit.count_documents({"comp": JAMES}) >= logged + 30
    assert await db.resources.count_documents({"comp": JAMES}) == before


async def test_events_an_older_version_stored_move_at_start_up(env: Env) -> None:
    store = env.app.state.ctx.store
    rid = new_id()
    old = {**audit_event(AuditRecord("GET", ["Patient", "x"], status=200)), "id": rid}
    # The old shape: fully indexed in `resources`, with a history version.
    await store.insert_versions([store.document("AuditEvent", rid, 1, old)])
    lu = (await store.resources.find_one({"_id": f"AuditEvent/{rid}"}))["lu"]
    assert await prepare_separate(store) == 1
    assert await prepare_separate(store) == 0  # nothing left to move
    assert await store.resources.count_documents({"_id": f"AuditEvent/{rid}"}) == 0
    assert await store.history.count_documents({"rt": "AuditEvent", "id": rid}) == 0
    moved = await env.db.audit.find_one({"_id": f"AuditEvent/{rid}"})
    assert moved["lu"] == lu and moved["res"]["entity"] == old["entity"]
    assert (await env.get("backend", f"AuditEvent/{rid}")).status_code == 200
    found = await env.get("backend", "AuditEvent", entity="Patient/x", _id=rid)
    assert found.json()["total"] == 1
    # `fhir-server reindex` recomputes the log's keys in its own collection.
    await env.db.audit.update_one({"_id": f"AuditEvent/{rid}"}, {"$set": {"ix": {}}})
    assert (await env.get("backend", "AuditEvent", entity="Patient/x", _id=rid)).json()[
        "total"
    ] == 0
    assert await reindex(store) >= await env.db.audit.count_documents({})
    found = await env.get("backend", "AuditEvent", entity="Patient/x", _id=rid)
    assert found.json()["total"] == 1


def test_the_table_is_checked_against_the_definitions() -> None:
    registry = Registry.load_default()
    good = {"resource_type": "AuditEvent", "collection": "audit", "search_parameters": ["date"]}
    assert parse_table(good, registry).search_parameters == {"date"}
    for bad in (
        {**good, "resource_type": "NoSuchType"},
        {**good, "collection": "resources"},
        {**good, "search_parameters": []},
        {**good, "search_parameters": ["date", "no-such-param"]},
        [],
    ):
        with pytest.raises(ValueError):
            parse_table(bad, registry)


def test_compartments_read_back_from_the_keys_match_the_definitions() -> None:
    from pymongo import AsyncMongoClient

    from fhir_server.access.audit import audit_events
    from fhir_server.access.audit_log import audit_store
    from fhir_server.search.extract import compartments
    from fhir_server.storage.store import ResourceStore

    registry = Registry.load_default()
    db = AsyncMongoClient("mongodb://127.0.0.1:1", connect=False)["unused"]
    log = audit_store(ResourceStore(db), registry)
    records = [
        AuditRecord(
            "GET", ["Observation", "o1"], status=200, fhir_user=JAMES, patients=["Patient/a"]
        ),
        AuditRecord("GET", ["Observation"], query="patient=a,b", status=200, patient="Patient/a"),
        AuditRecord("GET", ["Patient", "p1"], status=404, fhir_user="Practitioner/k"),
    ]
    for rec in records:
        for event in audit_events(rec):
            _, comp = log.indexer({**event, "id": "x"})
            assert sorted(comp) == sorted(compartments(event, registry)), event


# Every AuditEvent search shape of the access tests (test_audit*.py, test_reads.py,
# test_pipeline.py), by the caller who runs it there: each query it sends the log must be
# looked up in one of the log's indexes (ix.q, comp, lo, _id), never scan the collection.
LOG_SHAPES: list[tuple[str, str, dict[str, str]]] = [
    ("sponsor", "AuditEvent", {"patient": JAMES, "_count": "1000"}),
    ("sponsor", "AuditEvent", {"patient": JAMES, "_sort": "-date", "_count": "5"}),
    ("sponsor", "AuditEvent", {"patient": JAMES, "_summary": "count"}),
    ("sponsor", f"{JAMES}/AuditEvent", {"_count": "1000"}),
    ("sponsor", "AuditEvent", {"_count": "500"}),
    (EMMA_ROLE, "AuditEvent", {"patient": JAMES}),
    ("backend", "AuditEvent", {"subtype": "search-type", "_count": "1000"}),
    ("backend", "AuditEvent", {"outcome": "4", "date": "ge2020-01-01"}),
    ("backend", "AuditEvent", {"date": "ge2020-01-01"}),
    ("backend", "AuditEvent", {"entity": OBS}),
    ("backend", "AuditEvent", {"entity": "Patient/x", "_id": "x"}),
    ("backend", "AuditEvent", {"agent": "Patient/pipe-a"}),
    ("backend", "AuditEvent", {"agent:identifier": "bench-backend"}),
    (
        "backend",
        "AuditEvent",
        {"type": "http://terminology.hl7.org/CodeSystem/audit-event-type|rest"},
    ),
    ("backend", "AuditEvent", {"_security": "R", "action": "R"}),
    ("backend", "Observation", {"_id": OBS.split("/")[1], "_revinclude": "AuditEvent:entity"}),
]


async def _log_explain(db: Any, filt: dict[str, Any], sort: Any) -> str:
    """What SecantusDB runs (docs/database.md: the first top-level clause an index answers
    alone, as tests/integration/search/test_explain.py reads it); MongoDB's own plan."""

    async def plan(f: dict[str, Any]) -> str:
        cursor = db.audit.find(f)
        if sort:
            cursor = cursor.sort(sort)
        out = await cursor.limit(51).explain()
        return json.dumps(out.get("queryPlanner", {}).get("winningPlan", out), default=str)

    whole = await plan(filt)
    if "COLLSCAN" not in whole or await uses_elem_match(db) or any(k[0] == "$" for k in filt):
        return whole
    for field, clause in filt.items():
        alone = await plan({field: clause})
        if "COLLSCAN" not in alone:
            return alone
    return whole


async def test_every_search_shape_of_the_log_is_looked_up_in_an_index(env: Env) -> None:
    log = env.app.state.ctx.store.for_type("AuditEvent")
    sent: list[tuple[dict[str, Any], Any]] = []
    own, find = log._own, log._find

    def recording_own(filt: dict[str, Any]) -> dict[str, Any]:
        out = own(filt)
        sent.append((out, None))
        return out

    async def recording_find(
        coll: Any, filt: dict[str, Any], projection: Any, sort: Any, *a: Any, **kw: Any
    ) -> Any:
        if sent and sent[-1][0] is filt:
            sent[-1] = (filt, sort)
        return await find(coll, filt, projection, sort, *a, **kw)

    log._own, log._find = recording_own, recording_find
    try:
        for who, url, params in LOG_SHAPES:
            sent.clear()
            r = await env.get(who, url, **params)
            assert r.status_code == 200, (who, url, params, r.text)
            assert sent, (url, params)
            for filt, sort in sent:
                if not filt:
                    continue  # the whole log, listed or counted: no search to look up
                explained = await _log_explain(env.db, filt, sort)
                assert "COLLSCAN" not in explained, (url, params, filt, explained)
                assert "IXSCAN" in explained or "IDHACK" in explained, (url, params, explained)
    finally:
        del log._own, log._find
    # A token's system alone has no entry to look up in: refused, never a scan.
    r = await env.get(
        "backend", "AuditEvent", type="http://terminology.hl7.org/CodeSystem/audit-event-type|"
    )
    assert r.status_code == 400 and r.json()["issue"][0]["code"] == "not-supported", r.text


async def test_an_older_log_gets_its_looked_up_keys_and_loses_its_old_indexes(env: Env) -> None:
    assert (await env.get("backend", OBS)).status_code == 200
    await env.flush()
    db, store = env.db, env.app.state.ctx.store
    doc = await db.audit.find_one({"res.entity.what.reference": OBS}, sort=[("lu", -1)])
    # As an older version left it: `ix.k` indexed, no `ix.q`.
    await db.audit.create_index([("ix.k", 1), ("_id", 1)], name="k_id")
    await db.audit.update_one({"_id": doc["_id"]}, {"$unset": {"ix.q": ""}})

    async def found() -> bool:
        r = await env.get("backend", "AuditEvent", entity=OBS, _count="1000")
        return doc["id"] in {e["resource"]["id"] for e in r.json().get("entry", [])}

    assert not await found()  # looked up by `ix.q`, which it lacks
    await prepare_separate(store)
    assert await found()
    assert {ix["name"] async for ix in await db.audit.list_indexes()} == AUDIT_INDEXES
