"""Lean reads and a post-check on the stored facts, on the seeded server with real tokens.

- every stored document (and history version) carries `ak`, the access keys drawn from
  its index entries, and `fhir-server reindex` writes them again;
- no read path fetches the index arrays: every query a read, search (with `_include`,
  `_revinclude`), history, vread or `$everything` sends to `resources` names its fields,
  and none of them is `ix` whole;
- the post-check of a proxy's reads indexes no resource again while `ak` is stored, and
  documents written before `ak` existed (the field removed) are checked by indexing them
  again, with the very same answers.

docs/storage.md ("Lean reads"), docs/access.md ("The post-check").
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from fhir_server.access.stored_keys import access_field
from fhir_server.storage.reindex import reindex
from fhir_server.storage.store import ResourceStore
from tests.integration.access.test_smart_enforcement import Server
from tests.integration.seeded import seeded_server

USER = "openid fhirUser user/*.rs"
LIAM = "child-liam-carter"
SOPHIA = "adolescent-sophia-carter"


@dataclass
class Env:
    app: Any
    s: Server
    token: str
    # Resources the post-check indexed again (AuditEvents, which the sink indexes, left out).
    reindexed: list[str] = field(default_factory=list)

    async def get(self, url: str, **params: str) -> httpx.Response:
        return await self.s.get(self.token, url, **params)


@pytest.fixture(scope="module")
async def env(mongo_uri: str) -> AsyncIterator[Env]:
    async with seeded_server(mongo_uri) as (app, http):
        s = Server(http)
        e = Env(app, s, await s.token("sponsor", USER))
        store = app.state.ctx.store
        indexer = store.indexer

        def counting(resource: dict[str, Any]) -> Any:
            if resource.get("resourceType") != "AuditEvent":
                e.reindexed.append(f"{resource.get('resourceType')}/{resource.get('id')}")
            return indexer(resource)

        store.indexer = counting
        yield e


def _urls(r: httpx.Response) -> list[str]:
    """The entries of a Bundle but AuditEvents (each request of the test adds some)."""
    assert r.status_code == 200, r.text
    urls = (e["fullUrl"] for e in r.json().get("entry", []))
    return sorted(u for u in urls if "/AuditEvent/" not in u)


async def _view(env: Env, versions: bool = True) -> dict[str, Any]:
    """What the sponsor (a proxy of a child and of an adolescent) sees on every read path
    (`versions`: vread and history too)."""
    out: dict[str, Any] = {}
    for pid in (LIAM, SOPHIA):
        for rt in ("Observation", "Condition", "Communication", "Appointment", "Immunization"):
            r = await env.get(rt, patient=pid, _count="200")
            assert r.status_code == 200, r.text
            out[f"{rt}?patient={pid}"] = _urls(r)
        r = await env.get(
            "Observation",
            subject=f"Patient/{pid}",
            _include="Observation:performer",
            _revinclude="Provenance:target",
        )
        out[f"include {pid}"] = _urls(r)
        r = await env.get(f"Patient/{pid}/$everything")
        out[f"everything {pid}"] = _urls(r)
    store = env.app.state.ctx.store
    docs = await store.find(
        {"comp": {"$in": [f"Patient/{LIAM}", f"Patient/{SOPHIA}"]}, "rt": {"$ne": "AuditEvent"}},
        {"rt": 1, "id": 1, "vid": 1, "ix.k": 1},
        sort=[("_id", 1)],
    )
    # Every labelled one (hidden from the proxy), and a few of the others.
    labelled = [d for d in docs if any(k.startswith("_security=") for k in d["ix"]["k"])]
    assert labelled
    for d in labelled + [d for d in docs if d not in labelled][:6]:
        rt, rid = d["rt"], d["id"]
        out[d["_id"]] = (await env.get(f"{rt}/{rid}")).status_code
        if versions:
            vread = await env.get(f"{rt}/{rid}/_history/{d['vid']}")
            history = await env.get(f"{rt}/{rid}/_history")
            out[f"{d['_id']} versions"] = (vread.status_code, history.status_code)
    return out


async def test_documents_carry_their_access_keys(env: Env) -> None:
    store: ResourceStore = env.app.state.ctx.store
    docs = await store.find({}, {"ix.k": 1, "ak": 1, "vid": 1, "rt": 1, "res": 1})
    assert docs
    for d in docs:
        assert d["ak"] == access_field(d["ix"]["k"], d["rt"], d["res"]), d["_id"]
    current = {d["_id"]: d for d in docs}
    versions = [v async for v in store.history.find({"res": {"$ne": None}})]
    same = [
        v for v in versions if current.get(v["_id"].rsplit("/", 1)[0], {}).get("vid") == v["vid"]
    ]
    assert same
    for v in same:
        assert v["ak"] == current[v["_id"].rsplit("/", 1)[0]]["ak"], v["_id"]


async def test_no_read_path_fetches_the_index_arrays(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[tuple[str, Any]] = []
    original = ResourceStore._find

    async def spy(
        self: ResourceStore, collection: Any, filt: Any, projection: Any, *a: Any, **kw: Any
    ) -> Any:
        sent.append((collection.name, projection))
        return await original(self, collection, filt, projection, *a, **kw)

    monkeypatch.setattr(ResourceStore, "_find", spy)
    view = await _view(env)
    assert len(view) > 20
    reads = [p for c, p in sent if c == "resources"]
    assert reads
    for projection in reads:
        assert projection, "a read fetched whole documents"
        assert "ix" not in projection and projection.get("ix") != 0, projection


async def test_documents_without_access_keys_are_checked_as_before(env: Env) -> None:
    """Documents written before `ak` (the field removed here) are indexed again by the
    post-check and answer exactly as with it; reindex writes `ak` back."""
    store: ResourceStore = env.app.state.ctx.store
    env.reindexed.clear()
    with_keys = await _view(env)
    # The proxy's policy hides by labels and messages: its post-check used the stored keys.
    assert env.reindexed == []
    await store.resources.update_many({}, {"$unset": {"ak": ""}})
    await store.history.update_many({}, {"$unset": {"ak": ""}})
    try:
        without = await _view(env)
        assert env.reindexed, "the post-check never indexed a document lacking `ak`"
        assert without == with_keys
    finally:
        await reindex(store)
    # Reindex writes `ak` on the current documents (history versions stay as written and
    # are checked by indexing them again).
    env.reindexed.clear()
    assert await store.count({"ak": {"$exists": False}}) == 0
    current = await _view(env, versions=False)
    assert current == {k: v for k, v in with_keys.items() if not k.endswith(" versions")}
    assert env.reindexed == []
