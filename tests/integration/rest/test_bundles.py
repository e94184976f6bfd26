"""Batch and transaction bundles: atomicity, urn:uuid resolution, order, responses.

https://hl7.org/fhir/R4/http.html#transaction
"""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.conftest import FHIR_JSON, patient


def urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


async def test_transaction_resolves_urn_uuid_references(client: httpx.AsyncClient):
    p_url, o_url = urn(), urn()
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": o_url,
                "request": {"method": "POST", "url": "Observation"},
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "weight"},
                    "subject": {"reference": p_url},
                },
            },
            {
                "fullUrl": p_url,
                "request": {"method": "POST", "url": "Patient"},
                "resource": patient(),
            },
        ],
    }
    r = await client.post("", json=bundle, headers=FHIR_JSON)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in out["entry"]]
    assert statuses == ["201 Created", "201 Created"]
    obs_loc, pat_loc = (e["response"]["location"] for e in out["entry"])
    assert pat_loc.startswith("Patient/")
    obs = (await client.get(obs_loc.split("/_history")[0])).json()
    assert obs["subject"]["reference"] == pat_loc.split("/_history")[0]


async def test_transaction_is_all_or_nothing(client: httpx.AsyncClient):
    keep_id = f"keep-{uuid.uuid4().hex[:8]}"
    await client.put(f"Patient/{keep_id}", json=patient(id=keep_id), headers=FHIR_JSON)
    before = (await client.get("_history", params={"_count": "1"})).json()["total"]
    new_id = f"new-{uuid.uuid4().hex[:8]}"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "request": {"method": "PUT", "url": f"Patient/{new_id}"},
                "resource": patient(id=new_id),
            },
            {"request": {"method": "DELETE", "url": f"Patient/{keep_id}"}},
            # Fails at run time (stale version): everything above must roll back.
            {
                "request": {"method": "PUT", "url": f"Patient/{keep_id}x", "ifMatch": 'W/"3"'},
                "resource": patient(id=f"{keep_id}x"),
            },
        ],
    }
    r = await client.post("", json=bundle, headers=FHIR_JSON)
    assert r.status_code == 412, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    assert (await client.get(f"Patient/{new_id}")).status_code == 404
    assert (await client.get(f"Patient/{keep_id}")).status_code == 200
    assert (await client.get("_history", params={"_count": "1"})).json()["total"] == before


async def test_transaction_with_invalid_resource_writes_nothing(client: httpx.AsyncClient):
    before = (await client.get("_history", params={"_count": "1"})).json()["total"]
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": urn(),
                "request": {"method": "POST", "url": "Patient"},
                "resource": patient(),
            },
            {
                "fullUrl": urn(),
                "request": {"method": "POST", "url": "Patient"},
                "resource": patient(gender="banana"),
            },
        ],
    }
    r = await client.post("", json=bundle, headers=FHIR_JSON)
    assert r.status_code == 400
    issue = r.json()["issue"][0]
    assert "entry 1" in issue["diagnostics"]
    assert any(e.startswith("Bundle.entry[1].resource") for e in issue.get("expression", []))
    assert (await client.get("_history", params={"_count": "1"})).json()["total"] == before


async def test_transaction_processes_deletes_before_creates(client: httpx.AsyncClient):
    rid = f"order-{uuid.uuid4().hex[:8]}"
    await client.put(f"Patient/{rid}", json=patient(id=rid), headers=FHIR_JSON)
    # The PUT is listed first but the DELETE runs first, so the PUT re-creates it.
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "request": {"method": "PUT", "url": f"Patient/{rid}"},
                "resource": patient(id=rid, gender="male"),
            },
            {"request": {"method": "DELETE", "url": f"Patient/{rid}"}},
        ],
    }
    r = await client.post("", json=bundle, headers=FHIR_JSON)
    assert r.status_code == 200, r.text
    statuses = [e["response"]["status"] for e in r.json()["entry"]]
    assert statuses == ["201 Created", "204 No Content"]
    current = (await client.get(f"Patient/{rid}")).json()
    assert current["gender"] == "male"
    assert current["meta"]["versionId"] == "3"


async def test_batch_entries_succeed_or_fail_independently(client: httpx.AsyncClient):
    rid = f"batch-{uuid.uuid4().hex[:8]}"
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "PUT", "url": f"Patient/{rid}"}, "resource": patient(id=rid)},
            {"request": {"method": "POST", "url": "Patient"}, "resource": patient(gender="banana")},
            {"request": {"method": "GET", "url": f"Patient/{rid}"}},
            {"request": {"method": "GET", "url": "Patient/does-not-exist"}},
            {
                "request": {"method": "POST", "url": "Spaceship"},
                "resource": {"resourceType": "Spaceship"},
            },
        ],
    }
    r = await client.post("", json=bundle, headers=FHIR_JSON)
    assert r.status_code == 200
    out = r.json()
    assert out["type"] == "batch-response"
    statuses = [e["response"]["status"].split()[0] for e in out["entry"]]
    assert statuses == ["201", "400", "200", "404", "404"]
    assert out["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert out["entry"][2]["resource"]["id"] == rid


async def test_bundle_errors(client: httpx.AsyncClient):
    not_bundle = await client.post("", json=patient(), headers=FHIR_JSON)
    assert not_bundle.status_code == 400
    wrong_type = await client.post(
        "", json={"resourceType": "Bundle", "type": "collection"}, headers=FHIR_JSON
    )
    assert wrong_type.status_code == 400
    no_request = await client.post(
        "",
        headers=FHIR_JSON,
        json={"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": patient()}]},
    )
    assert no_request.status_code == 400
    dup = urn()
    duplicate = await client.post(
        "",
        headers=FHIR_JSON,
        json={
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "fullUrl": dup,
                    "request": {"method": "POST", "url": "Patient"},
                    "resource": patient(),
                },
                {
                    "fullUrl": dup,
                    "request": {"method": "POST", "url": "Patient"},
                    "resource": patient(),
                },
            ],
        },
    )
    assert duplicate.status_code == 400


def _tx(*entries: dict) -> dict:
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


def _post(resource: dict, full_url: str | None = None) -> dict:
    entry = {"request": {"method": "POST", "url": resource["resourceType"]}, "resource": resource}
    if full_url:
        entry["fullUrl"] = full_url
    return entry


async def _history_total(client: httpx.AsyncClient) -> int:
    return (await client.get("_history", params={"_count": "1"})).json()["total"]


async def test_transaction_failing_in_the_middle_writes_nothing(client: httpx.AsyncClient):
    """Entries before the failing one were already held for the bulk write: none lands,
    and no history version either (https://hl7.org/fhir/R4/http.html#trules)."""
    tag = uuid.uuid4().hex[:10]
    stale = f"stale-{tag}"
    await client.put(f"Patient/{stale}", json=patient(id=stale), headers=FHIR_JSON)
    before = await _history_total(client)
    marked = [patient(identifier=[{"system": "urn:test", "value": f"{tag}-{i}"}]) for i in range(6)]
    bundle = _tx(
        *(_post(p, urn()) for p in marked[:3]),
        # PUT runs after the POSTs (spec order) and fails on its stale version.
        {
            "request": {"method": "PUT", "url": f"Patient/{stale}", "ifMatch": 'W/"7"'},
            "resource": patient(id=stale, gender="male"),
        },
        *(_post(p, urn()) for p in marked[3:]),
    )
    r = await client.post("", json=bundle, headers=FHIR_JSON)
    assert r.status_code == 412, r.text
    assert "entry 3" in r.json()["issue"][0]["diagnostics"]
    found = await client.get("Patient", params={"identifier": f"urn:test|{tag}-0"})
    assert found.json().get("total", 0) == 0
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    assert await ctx.store.count({"rt": "Patient", "res.identifier.value": {"$regex": tag}}) == 0
    assert await _history_total(client) == before
    assert (await client.get(f"Patient/{stale}")).json()["meta"]["versionId"] == "1"


async def test_transaction_inherits_compartments_from_its_own_entries(client: httpx.AsyncClient):
    """A Provenance targeting resources created in the same transaction (as an import's
    Provenance does), listed before them, sits in their patients' compartments, and in the
    compartments of a target stored before (docs/storage.md, "Transactions in bulk")."""
    stored = f"stored-{uuid.uuid4().hex[:8]}"
    await client.put(
        f"Observation/{stored}",
        headers=FHIR_JSON,
        json={
            "resourceType": "Observation",
            "id": stored,
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": "Patient/elsewhere"},
        },
    )
    p_url, o_url = urn(), urn()
    bundle = _tx(
        {
            "fullUrl": "urn:uuid:prov",
            "request": {"method": "POST", "url": "Provenance"},
            "resource": {
                "resourceType": "Provenance",
                "target": [{"reference": o_url}, {"reference": f"Observation/{stored}"}],
                "recorded": "2026-01-05T10:00:00Z",
                "agent": [{"who": {"display": "import"}}],
            },
        },
        _post(
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "y"},
                "subject": {"reference": p_url},
            },
            o_url,
        ),
        _post(patient(), p_url),
    )
    r = await client.post("", json=bundle, headers=FHIR_JSON)
    assert r.status_code == 200, r.text
    prov_loc, _, pat_loc = (
        e["response"]["location"].split("/_history")[0] for e in r.json()["entry"]
    )
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    cur = (await ctx.store.find({"_id": prov_loc}))[0]
    assert sorted(cur["comp"]) == sorted([pat_loc, "Patient/elsewhere"])
    hist = await ctx.store.latest_versions(*prov_loc.split("/"), limit=5)
    assert [h["comp"] for h in hist] == [cur["comp"]]


async def test_concurrent_transactions_creating_one_id_one_wins(client: httpx.AsyncClient):
    """Two transactions that both read an id as absent and create it: the condition is in
    the write (an insert), so exactly one commits and the other changes nothing."""
    from pymongo.errors import OperationFailure

    from fhir_server.errors import PreconditionFailed

    store = client.app.state.ctx.store  # type: ignore[attr-defined]
    rid = f"race-{uuid.uuid4().hex[:8]}"
    async with store.client.start_session() as a, store.client.start_session() as b:
        await a.start_transaction()
        await b.start_transaction()
        async with store.deferred_writes(a):
            await store.update("Patient", rid, patient(id=rid, gender="male"), session=a)
            await store.create("Patient", patient(), rid=f"{rid}-a", session=a)
        lost = False
        try:
            async with store.deferred_writes(b):
                await store.update("Patient", rid, patient(id=rid, gender="female"), session=b)
                await store.create("Patient", patient(), rid=f"{rid}-b", session=b)
                await a.commit_transaction()
        except (PreconditionFailed, OperationFailure):
            lost = True
        if lost:
            await b.abort_transaction()
        else:
            await b.commit_transaction()
    # B may lose at its write or at its commit; either way it wrote nothing.
    assert lost
    cur = {d["_id"]: d for d in await store.find({"_id": {"$regex": f"^Patient/{rid}"}})}
    assert set(cur) == {f"Patient/{rid}", f"Patient/{rid}-a"}
    assert cur[f"Patient/{rid}"]["res"]["gender"] == "male"
    versions = await store.latest_versions("Patient", rid, limit=5)
    assert [v["vid"] for v in versions] == [1]
    assert await store.latest_versions("Patient", f"{rid}-b", limit=5) == []
    # A create (no read at all) of an id that exists by now fails at the bulk insert, and
    # takes the transaction's other writes with it.
    async with store.client.start_session() as c:
        with pytest.raises(PreconditionFailed):
            async with await c.start_transaction(), store.deferred_writes(c):
                await store.create("Patient", patient(), rid=f"{rid}-c", session=c)
                await store.create("Patient", patient(), rid=rid, session=c)
    assert await store.latest_versions("Patient", f"{rid}-c", limit=5) == []
    assert [v["vid"] for v in await store.latest_versions("Patient", rid, limit=5)] == [1]


async def test_concurrent_transaction_bundles_same_id(client: httpx.AsyncClient):
    """Through HTTP: rounds of two transactions PUTting the same new id beside creates of
    their own. Whatever the interleaving, no update is lost: the id has one version per
    transaction that succeeded, and a transaction that failed left none of its creates."""
    import asyncio

    for _ in range(3):
        rid = f"race-{uuid.uuid4().hex[:8]}"
        tags = [uuid.uuid4().hex[:10] for _ in range(2)]

        def bundle(tag: str, rid: str = rid) -> dict:
            return _tx(
                {
                    "request": {"method": "PUT", "url": f"Patient/{rid}"},
                    "resource": patient(id=rid, gender="other"),
                },
                *(
                    _post(patient(identifier=[{"system": "urn:test", "value": tag}]), urn())
                    for _ in range(10)
                ),
            )

        answers = await asyncio.gather(
            *(client.post("", json=bundle(t), headers=FHIR_JSON) for t in tags)
        )
        statuses = [r.status_code for r in answers]
        assert set(statuses) <= {200, 412} and 200 in statuses, [r.text for r in answers]
        ctx = client.app.state.ctx  # type: ignore[attr-defined]
        versions = await ctx.store.latest_versions("Patient", rid, limit=5)
        assert len(versions) == statuses.count(200)
        for tag, status in zip(tags, statuses, strict=True):
            n = await ctx.store.count({"rt": "Patient", "res.identifier.value": tag})
            assert n == (10 if status == 200 else 0)


async def test_bundle_over_the_entry_limit_is_413(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
):
    """One transaction never splits: past the documented size it is refused whole."""
    from fhir_server.rest import bundle as bundles

    monkeypatch.setattr(bundles, "MAX_ENTRIES", 2)
    before = await _history_total(client)
    for kind in ("transaction", "batch"):
        body = _tx(*(_post(patient(), urn()) for _ in range(3))) | {"type": kind}
        r = await client.post("", json=body, headers=FHIR_JSON)
        assert r.status_code == 413, r.text
        assert r.json()["issue"][0]["code"] == "too-costly"
    assert await _history_total(client) == before
