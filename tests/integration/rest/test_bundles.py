"""Batch and transaction bundles: atomicity, urn:uuid resolution, order, responses.

https://hl7.org/fhir/R4/http.html#transaction
"""

from __future__ import annotations

import uuid

import httpx

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
