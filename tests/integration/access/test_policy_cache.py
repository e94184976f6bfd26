"""Policy inputs cached per token subject, exact as reading them on every request.

fhir_server/access/policy_epochs.py: a proxy's request reads one epoch lookup instead of the
Patients, RelatedPersons and Consents its policy is built from; any write of those types
bumps the epochs in its own transaction, so a revoked grant is gone on the next request in
every process. Two server contexts on one database, each with its own client and cache,
stand for two server processes (they share nothing but the database). Ages are computed on
the request's day from the cached birthDate. The requests go through the real pipeline
(fhir_server/pipeline.py) with the seed population; the tokens' claims are made here.
Also: a proxy's read by id is one `_id` point lookup on SecantusDB (storage/store.py).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from pymongo import AsyncMongoClient, monitoring

from fhir_server.access import policy
from fhir_server.access.policy_epochs import (
    COLLECTION,
    FAMILY_TYPES,
    Entry,
    InputCache,
    Reads,
    snapshot,
)
from fhir_server.app import build_context
from fhir_server.context import ServerContext
from fhir_server.db.client import client_options, ensure_indexes
from fhir_server.errors import Unauthorized
from fhir_server.pipeline import Pipeline
from fhir_server.rest.messages import HttpRequest, HttpResponse
from fhir_server.search import execute, secantus_plan
from fhir_server.search.indexes import index_models
from smart_auth import AuthContext
from smart_auth.scopes import parse_scopes
from tests.conftest import drop_test_database, make_settings
from tests.integration.seeded import restore_seed

ROOT = Path(__file__).resolve().parents[3]
LOGINS = {x["role"]: x for x in json.loads((ROOT / "seed_data/logins.json").read_text())["logins"]}
SCOPE = "openid fhirUser user/*.cruds"
SPONSOR = "Patient/sponsor-james-carter"
SOPHIA = "Patient/adolescent-sophia-carter"
DANIEL_COND = "Condition/cond-daniel-mcl-injury"
GRANT = "Consent/consent-daniel-proxy-james"


def token(role: str) -> AuthContext:
    login = LOGINS[role]
    return AuthContext(
        subject=login["username"],
        client_id="policy-cache-test",
        scopes=parse_scopes(SCOPE),
        scope=SCOPE,
        token_id=f"tok-{role}",
        grant_id=f"grant-{role}",
        expires_at=datetime.now(UTC) + timedelta(hours=1),
        fhir_user=login["fhirUser"],
        acr=login["login"],
        acts_for=tuple(login.get("acts_for") or ()),
    )


TOKENS = {role: token(role) for role in ("sponsor", "adult-dependent-granted", "practitioner")}


async def verify(bearer: str | None) -> AuthContext:
    if bearer not in TOKENS:
        raise Unauthorized("no valid access token")
    return TOKENS[bearer]


class Commands(monitoring.CommandListener):
    """The commands one client sends: (command, collection, filter)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        coll = event.command.get(name)
        self.seen.append((name, coll if isinstance(coll, str) else "", event.command.get("filter")))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def finds(self, collection: str) -> list[Any]:
        return [f for n, c, f in self.seen if n == "find" and c == collection]


@dataclass
class Process:
    """One server process as far as the cache can tell: its own client, context, cache."""

    ctx: ServerContext
    pipe: Pipeline
    commands: Commands
    client: AsyncMongoClient[dict[str, Any]] = field(repr=False)

    async def call(
        self, who: str, method: str, url: str, body: Any = None, query: str = ""
    ) -> HttpResponse:
        headers = {"authorization": f"Bearer {who}"}
        raw = b""
        if body is not None:
            headers["content-type"] = "application/fhir+json"
            raw = orjson.dumps(body)
        return await self.pipe.handle(
            HttpRequest(method, tuple(url.split("/")), query.encode(), headers, raw)
        )

    async def status(self, who: str, url: str, query: str = "") -> int:
        return (await self.call(who, "GET", url, query=query)).status


@pytest.fixture(scope="module")
async def procs(mongo_uri: str) -> AsyncIterator[list[Process]]:
    settings = make_settings(mongo_uri, auth_required=True)
    await restore_seed(mongo_uri, settings.database, logins=False)
    out = []
    for _ in range(2):
        commands = Commands()
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            mongo_uri, event_listeners=[commands], **client_options(10_000)
        )
        ctx = build_context(settings, client[settings.database])
        out.append(Process(ctx, Pipeline(ctx, verify=verify), commands, client))
    await ensure_indexes(out[0].ctx.store.db, index_models())
    yield out
    await drop_test_database(out[0].client, settings.database)
    for p in out:
        await p.client.close()


async def test_a_proxy_request_reads_one_epoch_lookup_not_its_policy_inputs(procs):
    a = procs[0]
    assert await a.status("sponsor", SPONSOR) == 200  # builds and caches the inputs
    a.commands.seen.clear()
    assert await a.status("sponsor", SPONSOR) == 200
    # The epochs (one point lookup), then the read itself: no Patient, RelatedPerson or
    # Consent query (there were 3 before the cache).
    assert a.commands.finds(COLLECTION) == [
        {"_id": {"$in": sorted({SPONSOR, *TOKENS["sponsor"].acts_for})}}
    ]
    reads = a.commands.finds("resources")
    if not await execute.uses_elem_match(a.ctx.store.db):
        # SecantusDB scans for `{_id, $and: [policy]}`: the read is the point lookup alone.
        assert reads == [{"_id": SPONSOR}]
    assert len(a.commands.seen) == 2, a.commands.seen
    # A clinician's care teams the same way: one epoch (all care teams), no team query.
    assert await a.status("practitioner", "Patient", "_count=5") == 200
    a.commands.seen.clear()
    assert await a.status("practitioner", "Patient", "_count=5") == 200
    assert a.commands.finds(COLLECTION) == [{"_id": {"$in": ["care-teams"]}}]
    assert not [f for f in a.commands.finds("resources") if "CareTeam" in repr(f)]


async def test_a_revoked_grant_is_gone_at_once_in_every_process(procs):
    a, b = procs
    for p in procs:  # both processes hold the sponsor's inputs with the grant
        assert await p.status("sponsor", DANIEL_COND) == 200
        assert await p.status("sponsor", DANIEL_COND) == 200
    consent = orjson.loads((await a.call("adult-dependent-granted", "GET", GRANT)).body)
    revoked = await a.call(
        "adult-dependent-granted", "PUT", GRANT, {**consent, "status": "inactive"}
    )
    assert revoked.status == 200, revoked.body
    # The very next request, in the process that wrote and in the other one.
    assert await b.status("sponsor", DANIEL_COND) == 404
    assert await a.status("sponsor", DANIEL_COND) == 404
    restored = await b.call(
        "adult-dependent-granted", "PUT", GRANT, {**consent, "status": "active"}
    )
    assert restored.status == 200, restored.body
    assert await a.status("sponsor", DANIEL_COND) == 200
    assert await b.status("sponsor", DANIEL_COND) == 200
    # Deleted through the store alone (no HTTP, as a loader or an admin tool would).
    current = await a.ctx.store.read("Consent", GRANT.split("/")[1])
    await a.ctx.store.delete("Consent", GRANT.split("/")[1])
    assert await b.status("sponsor", DANIEL_COND) == 404
    await a.ctx.store.update("Consent", GRANT.split("/")[1], current.resource)
    assert await b.status("sponsor", DANIEL_COND) == 200


async def test_an_in_flight_build_from_before_a_revoke_is_not_used_after_it(procs, monkeypatch):
    a, b = procs
    consent = orjson.loads((await a.call("adult-dependent-granted", "GET", GRANT)).body)
    store = b.ctx.store
    real = store.resources_matching
    revoked = False

    async def read_then_revoke(filt: dict[str, Any], **kw: Any) -> list[dict[str, Any]]:
        """The build reads the grant, then another process revokes it before the build
        has finished and cached what it read."""
        nonlocal revoked
        docs = await real(filt, **kw)
        if filt.get("rt") == "Consent" and not revoked:
            revoked = True
            r = await a.call(
                "adult-dependent-granted", "PUT", GRANT, {**consent, "status": "inactive"}
            )
            assert r.status == 200, r.body
        return docs

    b.ctx.policy_inputs = InputCache()  # an empty cache: the next build reads everything
    monkeypatch.setattr(store, "resources_matching", read_then_revoke)
    # In flight: built from the grant read before the revoke (as without a cache).
    assert await b.status("sponsor", DANIEL_COND) == 200
    monkeypatch.undo()
    assert revoked
    # The entry it left carries the epochs it read before the revoke: never used after it.
    assert await b.status("sponsor", DANIEL_COND) == 404
    r = await a.call("adult-dependent-granted", "PUT", GRANT, {**consent, "status": "active"})
    assert r.status == 200, r.body
    assert await b.status("sponsor", DANIEL_COND) == 200


async def test_a_birthday_changes_the_band_without_a_write(procs, monkeypatch):
    a = procs[0]
    assert await a.status("sponsor", SOPHIA) == 200
    assert await a.status("sponsor", SOPHIA) == 200  # from the cache
    sophia = await a.ctx.store.read("Patient", SOPHIA.split("/")[1])
    born = date.fromisoformat(sophia.resource["birthDate"])
    adult = a.ctx.policy_tables.family.adult_from
    eighteenth = born.replace(year=born.year + adult)
    epochs = await snapshot(a.ctx.store.db, [SPONSOR, *TOKENS["sponsor"].acts_for])
    monkeypatch.setattr(policy, "today", lambda: eighteenth - timedelta(days=1))
    assert await a.status("sponsor", SOPHIA) == 200
    # Midnight: an adult now, and no Consent names her father: no access, no write made.
    monkeypatch.setattr(policy, "today", lambda: eighteenth)
    assert await a.status("sponsor", SOPHIA) == 404
    assert await snapshot(a.ctx.store.db, [SPONSOR, *TOKENS["sponsor"].acts_for]) == epochs


async def test_reads_outside_the_tracked_types_and_stale_entries_are_refused(procs):
    a = procs[0]
    reads = Reads(a.ctx.store, InputCache(), ("x",), (("Patient/p", 1),), FAMILY_TYPES)
    with pytest.raises(AssertionError, match="epoch-tracked"):
        await reads.resources_matching({"rt": "Observation"})
    with pytest.raises(AssertionError, match="epoch-tracked"):
        await reads.resources_matching({"_id": {"$in": ["Observation/x"]}})
    cache = InputCache()
    cache.put(("s",), Entry((("Patient/p", 2),), {"q": []}))
    # A build that read epoch 1 finishes after one that read epoch 2: the later one stays.
    cache.put(("s",), Entry((("Patient/p", 1),), {"q": [{"stale": True}]}))
    held = cache.get(("s",), (("Patient/p", 2),))
    assert held is not None and held.reads == {"q": []}
    assert cache.get(("s",), (("Patient/p", 1),)) is None


async def test_a_proxy_read_by_id_answers_as_the_filter_would(procs):
    """SecantusDB's read path tests the policy's filter in memory on the document read by
    `_id` (secantus_plan.recheck): for every seed resource and the sponsor, the granted
    dependent and a practitioner, the same answer as the database evaluating the filter."""
    a = procs[0]
    docs = [d async for d in a.ctx.store.db.resources.find({}, {"res": 0})]
    types = sorted({d["rt"] for d in docs})
    for who in TOKENS:
        pol = await policy.build_policy(a.ctx.store, a.ctx.policy_tables, TOKENS[who])
        shown = 0
        for rt in types:
            visible = pol.type_filter(rt)
            if not visible:
                continue
            check = secantus_plan.recheck(visible)
            assert check is not None, (who, rt, visible)
            test, _ = check
            found = a.ctx.store.db.resources.find({"rt": rt, "$and": [visible]}, {"_id": 1})
            by_db = {d["_id"] async for d in found}
            in_memory = {d["_id"] for d in docs if d["rt"] == rt and test(d)}
            assert in_memory == by_db, (who, rt)
            shown += len(by_db)
        assert 0 < shown < len(docs), who
    # The read itself, hidden and shown alike.
    sponsor = await policy.build_policy(a.ctx.store, a.ctx.policy_tables, TOKENS["sponsor"])
    for key, seen in ((DANIEL_COND, True), ("Patient/dependent-emma-carter", False)):
        rt, rid = key.split("/")
        doc = await a.ctx.store.find_visible(rt, rid, sponsor.type_filter(rt))
        assert (doc is not None) == seen and (doc is None or "ix" not in doc), key
