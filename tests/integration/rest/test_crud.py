"""Read, vread, create, update, delete, patch and their headers, on a real database.

https://hl7.org/fhir/R4/http.html
"""

from __future__ import annotations

import uuid

import httpx

from tests.conftest import FHIR_JSON, patient


def new_id() -> str:
    return f"t-{uuid.uuid4().hex[:16]}"


async def test_create_assigns_id_and_version_ignoring_client_values(client: httpx.AsyncClient):
    body = patient(
        id="client-chosen", meta={"versionId": "77", "lastUpdated": "2001-01-01T00:00:00Z"}
    )
    r = await client.post("Patient", json=body, headers=FHIR_JSON)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["id"] != "client-chosen"
    assert created["meta"]["versionId"] == "1"
    assert not created["meta"]["lastUpdated"].startswith("2001")
    assert r.headers["etag"] == 'W/"1"'
    assert r.headers["location"].endswith(f"/fhir/Patient/{created['id']}/_history/1")
    assert r.headers["content-type"].startswith("application/fhir+json")
    assert "last-modified" in r.headers


async def test_read_vread_update_and_update_as_create(client: httpx.AsyncClient):
    rid = new_id()
    r = await client.put(f"Patient/{rid}", json=patient(id=rid), headers=FHIR_JSON)
    assert r.status_code == 201, r.text
    r = await client.put(f"Patient/{rid}", json=patient(id=rid, gender="female"), headers=FHIR_JSON)
    assert r.status_code == 200
    assert r.json()["meta"]["versionId"] == "2"
    read = await client.get(f"Patient/{rid}")
    assert read.status_code == 200
    assert read.json()["gender"] == "female"
    assert read.headers["etag"] == 'W/"2"'
    v1 = await client.get(f"Patient/{rid}/_history/1")
    assert v1.status_code == 200
    assert "gender" not in v1.json()
    assert (await client.get(f"Patient/{rid}/_history/9")).status_code == 404
    assert (await client.get(f"Patient/{rid}/_history/x")).status_code == 404


async def test_identical_update_makes_no_new_version(client: httpx.AsyncClient):
    rid = new_id()
    await client.put(f"Patient/{rid}", json=patient(id=rid), headers=FHIR_JSON)
    r = await client.put(f"Patient/{rid}", json=patient(id=rid), headers=FHIR_JSON)
    assert r.status_code == 200
    assert r.json()["meta"]["versionId"] == "1"


async def test_delete_then_read_is_gone_and_history_keeps_versions(client: httpx.AsyncClient):
    rid = new_id()
    await client.put(f"Patient/{rid}", json=patient(id=rid), headers=FHIR_JSON)
    r = await client.delete(f"Patient/{rid}")
    assert r.status_code == 204
    gone = await client.get(f"Patient/{rid}")
    assert gone.status_code == 410
    assert gone.json()["resourceType"] == "OperationOutcome"
    assert gone.json()["issue"][0]["code"] == "deleted"
    assert (await client.get(f"Patient/{rid}/_history/1")).status_code == 200
    hist = (await client.get(f"Patient/{rid}/_history")).json()
    assert [e["request"]["method"] for e in hist["entry"]] == ["DELETE", "PUT"]
    assert hist["total"] == 2
    # Deleting again is idempotent; re-creating continues the version sequence.
    assert (await client.delete(f"Patient/{rid}")).status_code == 204
    again = await client.put(f"Patient/{rid}", json=patient(id=rid), headers=FHIR_JSON)
    assert again.status_code == 201
    assert again.json()["meta"]["versionId"] == "3"


async def test_missing_resource_is_404_with_outcome(client: httpx.AsyncClient):
    r = await client.get(f"Patient/{new_id()}")
    assert r.status_code == 404
    assert r.json()["issue"][0]["code"] == "not-found"


async def test_if_match(client: httpx.AsyncClient):
    rid = new_id()
    await client.put(f"Patient/{rid}", json=patient(id=rid), headers=FHIR_JSON)
    stale = await client.put(
        f"Patient/{rid}",
        json=patient(id=rid, gender="male"),
        headers={**FHIR_JSON, "If-Match": 'W/"5"'},
    )
    assert stale.status_code == 412
    assert stale.json()["resourceType"] == "OperationOutcome"
    ok = await client.put(
        f"Patient/{rid}",
        json=patient(id=rid, gender="male"),
        headers={**FHIR_JSON, "If-Match": 'W/"1"'},
    )
    assert ok.status_code == 200
    assert (await client.delete(f"Patient/{rid}", headers={"If-Match": 'W/"1"'})).status_code == 412
    assert (await client.get(f"Patient/{rid}")).status_code == 200


async def test_prefer_return(client: httpx.AsyncClient):
    minimal = await client.post(
        "Patient", json=patient(), headers={**FHIR_JSON, "Prefer": "return=minimal"}
    )
    assert minimal.status_code == 201
    assert minimal.content == b""
    assert minimal.headers["location"]
    oo = await client.post(
        "Patient", json=patient(), headers={**FHIR_JSON, "Prefer": "return=OperationOutcome"}
    )
    assert oo.status_code == 201
    assert oo.json()["resourceType"] == "OperationOutcome"
    rep = await client.post(
        "Patient", json=patient(), headers={**FHIR_JSON, "Prefer": "return=representation"}
    )
    assert rep.json()["resourceType"] == "Patient"


async def test_format_and_pretty(client: httpx.AsyncClient):
    created = (await client.post("Patient", json=patient(), headers=FHIR_JSON)).json()
    pretty = await client.get(f"Patient/{created['id']}", params={"_pretty": "true"})
    assert b'\n  "' in pretty.content
    compact = await client.get(f"Patient/{created['id']}")
    assert b"\n" not in compact.content
    as_json = await client.get(f"Patient/{created['id']}", params={"_format": "json"})
    assert as_json.status_code == 200
    xml = await client.get(f"Patient/{created['id']}", params={"_format": "xml"})
    assert xml.status_code == 406
    assert xml.json()["resourceType"] == "OperationOutcome"
    accept_xml = await client.get(
        f"Patient/{created['id']}", headers={"Accept": "application/fhir+xml"}
    )
    assert accept_xml.status_code == 406
    head = await client.head(f"Patient/{created['id']}")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["etag"] == 'W/"1"'


async def test_json_patch(client: httpx.AsyncClient):
    rid = new_id()
    await client.put(f"Patient/{rid}", json=patient(id=rid), headers=FHIR_JSON)
    patch_headers = {"Content-Type": "application/json-patch+json"}
    r = await client.patch(
        f"Patient/{rid}",
        headers=patch_headers,
        json=[{"op": "add", "path": "/gender", "value": "other"}],
    )
    assert r.status_code == 200, r.text
    assert r.json()["gender"] == "other"
    assert r.json()["meta"]["versionId"] == "2"
    failed_test = await client.patch(
        f"Patient/{rid}",
        headers=patch_headers,
        json=[{"op": "test", "path": "/gender", "value": "male"}],
    )
    assert failed_test.status_code == 422
    bad_path = await client.patch(
        f"Patient/{rid}", headers=patch_headers, json=[{"op": "remove", "path": "/nope/0"}]
    )
    assert bad_path.status_code == 400
    invalid_result = await client.patch(
        f"Patient/{rid}",
        headers=patch_headers,
        json=[{"op": "replace", "path": "/gender", "value": "banana"}],
    )
    assert invalid_result.status_code == 400
    change_id = await client.patch(
        f"Patient/{rid}",
        headers=patch_headers,
        json=[{"op": "replace", "path": "/id", "value": "other"}],
    )
    assert change_id.status_code == 422
    wrong_type = await client.patch(
        f"Patient/{rid}",
        headers=FHIR_JSON,
        json=[{"op": "add", "path": "/gender", "value": "male"}],
    )
    assert wrong_type.status_code == 415
    stale = await client.patch(
        f"Patient/{rid}",
        headers={**patch_headers, "If-Match": 'W/"1"'},
        json=[{"op": "add", "path": "/gender", "value": "male"}],
    )
    assert stale.status_code == 412
    assert (await client.get(f"Patient/{rid}")).json()["meta"]["versionId"] == "2"


async def test_validate_operation(client: httpx.AsyncClient):
    ok = await client.post("Patient/$validate", json=patient(), headers=FHIR_JSON)
    assert ok.status_code == 200
    assert ok.json()["issue"][0]["severity"] == "information"
    bad = await client.post("Patient/$validate", json=patient(gender="banana"), headers=FHIR_JSON)
    assert bad.status_code == 200
    assert any(i["severity"] == "error" for i in bad.json()["issue"])
    wrapped = await client.post(
        "Patient/$validate",
        headers=FHIR_JSON,
        json={
            "resourceType": "Parameters",
            "parameter": [{"name": "resource", "resource": patient(birthDate="2020-13-45")}],
        },
    )
    assert any(i["severity"] == "error" for i in wrapped.json()["issue"])
    rid = new_id()
    await client.put(f"Patient/{rid}", json=patient(id=rid), headers=FHIR_JSON)
    inst = await client.post(f"Patient/{rid}/$validate", json=patient(id=rid), headers=FHIR_JSON)
    assert inst.status_code == 200
    assert inst.json()["issue"][0]["severity"] == "information"


async def test_metadata(client: httpx.AsyncClient):
    r = await client.get("metadata")
    assert r.status_code == 200
    cs = r.json()
    assert cs["resourceType"] == "CapabilityStatement"
    assert cs["fhirVersion"] == "4.0.1"
    types = {res["type"]: res for res in cs["rest"][0]["resource"]}
    assert {
        "Patient",
        "Observation",
        "DiagnosticReport",
        "MedicationRequest",
        "Appointment",
        "Communication",
        "Provenance",
    } <= set(types)
    # R4 types the R4B models also know (R4B dropped or restructured a few, e.g. MedicinalProduct).
    assert len(types) >= 125
    codes = {i["code"] for i in types["Patient"]["interaction"]}
    assert {
        "read",
        "vread",
        "update",
        "patch",
        "delete",
        "history-instance",
        "create",
        "search-type",
        "history-type",
    } <= codes
    params = {p["name"]: p for p in types["Patient"]["searchParam"]}
    assert params["birthdate"]["type"] == "date"
    assert params["birthdate"]["documentation"] == "The patient's date of birth"
    assert params["identifier"]["type"] == "token"
    assert params["birthdate"]["definition"].startswith("http://hl7.org/fhir/SearchParameter/")
    documented = [p for res in types.values() for p in res["searchParam"] if p.get("documentation")]
    assert len(documented) > 1000
    assert {i["code"] for i in cs["rest"][0]["interaction"]} >= {"transaction", "batch"}


async def test_compartment_search_links_and_full_urls(client: httpx.AsyncClient):
    pid = new_id()
    assert (await client.put(f"Patient/{pid}", json=patient(id=pid))).status_code == 201
    for n in range(3):
        obs = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": f"probe {n}"},
            "subject": {"reference": f"Patient/{pid}"},
        }
        assert (await client.post("Observation", json=obs, headers=FHIR_JSON)).status_code == 201
    r = await client.get(f"Patient/{pid}/Observation", params={"_count": "2"})
    bundle = r.json()
    links = {link["relation"]: link["url"] for link in bundle["link"]}
    # https://hl7.org/fhir/R4/http.html#paging: the links repeat the compartment search.
    assert f"/fhir/Patient/{pid}/Observation?" in links["self"]
    assert links["self"].count(f"Patient/{pid}") == 1
    page2 = await client.get(links["next"].split("/fhir/", 1)[1])
    assert page2.status_code == 200 and len(page2.json()["entry"]) == 1
    for e in bundle["entry"]:
        assert e["fullUrl"].endswith(f"/fhir/Observation/{e['resource']['id']}")
