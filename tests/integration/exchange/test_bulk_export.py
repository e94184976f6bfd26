"""Bulk Data `$export` end to end: kick-off, poll, manifest, download, on the real database.

Expected counts come from the seed population as built by `seed_data.population` (what was
loaded), counted here by type and by the patient each resource names, never from the server.
Bulk Data Access IG 2.0.0: https://hl7.org/fhir/uv/bulkdata/export.html
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from joserfc.jwk import RSAKey

from fhir_server.exchange import bulk_run
from fhir_server.exchange.bulk_store import JobStore
from seed_data.population import build_population
from tests.conftest import make_settings, running_app
from tests.integration.access.test_smart_enforcement import Server
from tests.integration.auth.conftest import BACKEND, BASE
from tests.integration.auth.test_backend_services import assertion, request_token
from tests.integration.seeded import restore_seed, seeded_server

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
FAMILY = "group-carter-family"
LAB = "http://terminology.hl7.org/CodeSystem/observation-category"
POPULATION = build_population(date.today())
BY_TYPE = Counter(r["resourceType"] for r in POPULATION)
# The element that names the patient a resource is about, per type checked below.
OWNER_FIELD = {
    "Observation": "subject",
    "Condition": "subject",
    "Immunization": "patient",
    "AllergyIntolerance": "patient",
}


def owned_by(rt: str, patients: set[str]) -> int:
    """How many seed resources of `rt` are about one of `patients` ("Patient/<id>")."""
    if rt == "Patient":
        return sum(
            1 for r in POPULATION if rt == r["resourceType"] and f"Patient/{r['id']}" in patients
        )
    key = OWNER_FIELD[rt]
    return sum(
        1
        for r in POPULATION
        if r["resourceType"] == rt and (r.get(key) or {}).get("reference") in patients
    )


def family_members() -> set[str]:
    group = next(r for r in POPULATION if r["resourceType"] == "Group" and r["id"] == FAMILY)
    return {m["entity"]["reference"] for m in group["member"]}


def is_lab(r: dict[str, Any]) -> bool:
    return any(
        c.get("system") == LAB and c.get("code") == "laboratory"
        for cat in r.get("category", [])
        for c in cat.get("coding", [])
    )


@pytest.fixture(scope="module")
async def client(mongo_uri: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(mongo_uri)
    await restore_seed(mongo_uri, settings.database, logins=False)
    async with running_app(settings) as c:
        yield c


async def kick_off(
    c: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None, **kw: Any
) -> str:
    r = await c.request(kw.pop("method", "GET"), url, headers={**ASYNC, **(headers or {})}, **kw)
    assert r.status_code == 202, r.text
    location = r.headers["content-location"]
    assert location.startswith("http://127.0.0.1:8080/fhir/$export-status/")
    return location


async def poll(
    c: httpx.AsyncClient, location: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    for _ in range(2400):  # 2 minutes: the machine is shared
        r = await c.get(location, headers=headers)
        if r.status_code != 202:
            return r
        assert r.headers["retry-after"].isdigit()
        assert "x-progress" in r.headers
        await asyncio.sleep(0.05)
    raise AssertionError("the export did not finish in 2 minutes")


async def download(
    c: httpx.AsyncClient, manifest: dict[str, Any], headers: dict[str, str] | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Every output file, checked line by line against the manifest; resources by type."""
    out: dict[str, list[dict[str, Any]]] = {}
    for item in manifest["output"]:
        r = await c.get(
            item["url"], headers={**(headers or {}), "Accept": "application/fhir+ndjson"}
        )
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/fhir+ndjson")
        lines = r.content.splitlines()
        assert len(lines) == item["count"]
        resources = [orjson.loads(line) for line in lines]
        assert {x["resourceType"] for x in resources} <= {item["type"]}
        out.setdefault(item["type"], []).extend(resources)
    return out


async def export(
    c: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None, **kw: Any
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    location = await kick_off(c, url, headers, **kw)
    r = await poll(c, location, headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    manifest = r.json()
    return manifest, await download(c, manifest, headers)


def counts(files: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
    return {rt: len(v) for rt, v in files.items()}


# --- with tokens off ---------------------------------------------------------------------


async def test_system_export_has_every_seed_resource(client: httpx.AsyncClient) -> None:
    before = datetime.now(UTC)
    manifest, files = await export(client, "$export")
    assert counts(files) == dict(BY_TYPE)
    ids = {f"{x['resourceType']}/{x['id']}" for v in files.values() for x in v}
    assert ids == {f"{r['resourceType']}/{r['id']}" for r in POPULATION}
    assert manifest["request"] == "http://127.0.0.1:8080/fhir/$export"
    assert manifest["error"] == [] and manifest["deleted"] == []
    t = datetime.fromisoformat(manifest["transactionTime"].replace("Z", "+00:00"))
    assert before - timedelta(seconds=1) <= t <= datetime.now(UTC)
    # Tokens are off here, so none is needed to download.
    assert manifest["requiresAccessToken"] is False


async def test_type_and_since(client: httpx.AsyncClient) -> None:
    manifest, files = await export(client, "$export?_type=Patient,Immunization")
    assert counts(files) == {"Patient": BY_TYPE["Patient"], "Immunization": BY_TYPE["Immunization"]}
    assert "_type=Patient%2CImmunization" in manifest["request"]
    await asyncio.sleep(0.01)
    since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    await asyncio.sleep(0.01)
    obs = next(r for r in POPULATION if r["resourceType"] == "Observation")
    changed = {**obs, "note": [{"text": "changed after _since"}]}
    r = await client.put(f"Observation/{obs['id']}", json=changed)
    assert r.status_code == 200, r.text
    _, files = await export(client, "$export", params={"_since": since})
    assert counts(files) == {"Observation": 1}
    assert files["Observation"][0]["id"] == obs["id"]


async def test_group_and_patient_level(client: httpx.AsyncClient) -> None:
    members = family_members()
    types = ["Patient", *OWNER_FIELD]
    _, files = await export(client, f"Group/{FAMILY}/$export", params={"_type": ",".join(types)})
    expected = {rt: owned_by(rt, members) for rt in types}
    assert counts(files) == {rt: n for rt, n in expected.items() if n}
    assert expected["Patient"] == 6 and expected["Observation"] > 0
    # POST with a Parameters body: the `patient` parameter narrows a Group export.
    two = {"Patient/child-liam-carter", "Patient/adolescent-sophia-carter"}
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "_type", "valueString": "Patient,Immunization"},
            *({"name": "patient", "valueReference": {"reference": p}} for p in sorted(two)),
        ],
    }
    _, files = await export(client, f"Group/{FAMILY}/$export", method="POST", json=body)
    assert counts(files) == {"Patient": 2, "Immunization": owned_by("Immunization", two)}
    # Patient level: every patient's compartment; resources of no patient stay out.
    _, files = await export(client, "Patient/$export", params={"_type": "Patient,Condition"})
    assert counts(files) == {"Patient": BY_TYPE["Patient"], "Condition": BY_TYPE["Condition"]}
    _, files = await export(client, "Patient/$export")
    assert "Practitioner" not in files and "Organization" not in files
    assert len(files["Patient"]) == BY_TYPE["Patient"]


async def test_type_filter_and_elements(client: httpx.AsyncClient) -> None:
    labs = sum(1 for r in POPULATION if r["resourceType"] == "Observation" and is_lab(r))
    assert 0 < labs < BY_TYPE["Observation"]
    query = f"Observation?category={LAB}|laboratory"
    _, files = await export(
        client, "$export", params={"_type": "Observation,Patient", "_typeFilter": query}
    )
    assert counts(files) == {"Observation": labs, "Patient": BY_TYPE["Patient"]}
    assert all(is_lab(x) for x in files["Observation"])
    _, files = await export(client, "$export", params={"_type": "Patient", "_elements": "gender"})
    assert all(set(x) <= {"resourceType", "id", "meta", "gender"} for x in files["Patient"])
    assert all(any(t["code"] == "SUBSETTED" for t in x["meta"]["tag"]) for x in files["Patient"])


async def test_lenient_problems_go_to_the_error_file(client: httpx.AsyncClient) -> None:
    headers = {"Prefer": "respond-async; handling=lenient"}
    manifest, files = await export(
        client, "$export", headers, params={"_type": "Patient,NoSuchType", "foo": "bar"}
    )
    assert counts(files) == {"Patient": BY_TYPE["Patient"]}
    assert [e["type"] for e in manifest["error"]] == ["OperationOutcome"]
    r = await client.get(manifest["error"][0]["url"])
    outcomes = [orjson.loads(line) for line in r.content.splitlines()]
    texts = " ".join(i["diagnostics"] for o in outcomes for i in o["issue"])
    assert "NoSuchType" in texts and "foo" in texts
    assert {i["severity"] for o in outcomes for i in o["issue"]} == {"warning"}


@pytest.mark.parametrize(
    ("url", "headers", "status", "code"),
    [
        ("$export", {"Prefer": ""}, 400, "invalid"),
        ("$export?_outputFormat=text/csv", ASYNC, 400, "not-supported"),
        ("$export?_type=NoSuchType", ASYNC, 400, "not-supported"),
        ("$export?_since=yesterday", ASYNC, 400, "invalid"),
        ("$export?_since=2026-01-01T00:00:00", ASYNC, 400, "invalid"),
        ("$export?patient=Patient/child-liam-carter", ASYNC, 400, "invalid"),
        ("$export?_typeFilter=Observation%3F_sort%3Ddate", ASYNC, 400, "invalid"),
        ("$export?_typeFilter=Observation%3Fsubject.name%3Dx", ASYNC, 400, "not-supported"),
        ("$export?includeAssociatedData=LatestProvenanceResources", ASYNC, 400, "not-supported"),
        ("Patient/$export?_type=Practitioner", ASYNC, 400, "not-supported"),
        ("Group/no-such-group/$export", ASYNC, 404, "not-found"),
        ("$export-status/0123456789abcdef0123456789abcdef", {}, 404, "not-found"),
    ],
)
async def test_bad_kick_off(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], status: int, code: str
) -> None:
    r = await client.get(url, headers=headers)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == code


async def test_wrong_methods_and_bodies(client: httpx.AsyncClient) -> None:
    r = await client.delete("$export", headers=ASYNC)
    assert r.status_code == 405
    r = await client.post("$export", headers=ASYNC, json={"resourceType": "Patient"})
    assert r.status_code == 400 and r.json()["issue"][0]["code"] == "invalid"


async def test_delete_cancels_and_removes(client: httpx.AsyncClient) -> None:
    location = await kick_off(client, "$export")
    r = await client.delete(location)
    assert r.status_code == 202
    assert (await client.get(location)).status_code == 404
    assert (await client.delete(location)).status_code == 404
    # A finished job's files go with it.
    location = await kick_off(client, "$export?_type=Patient")
    manifest = (await poll(client, location)).json()
    url = manifest["output"][0]["url"]
    assert (await client.get(url)).status_code == 200
    assert (await client.delete(location)).status_code == 202
    r = await client.get(url)
    assert r.status_code == 404 and r.json()["issue"][0]["code"] == "not-found"
    jobs = client.app.state.ctx.store.db["bulk_files"]  # type: ignore[attr-defined]
    job_id = location.rsplit("/", 1)[1]
    assert await jobs.count_documents({"job": job_id}) == 0


async def test_large_types_split_into_several_files(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bulk_run, "FILE_BYTES", 4000)
    manifest, files = await export(client, "$export?_type=Observation")
    assert len(manifest["output"]) > 1
    assert {o["type"] for o in manifest["output"]} == {"Observation"}
    assert len({o["url"] for o in manifest["output"]}) == len(manifest["output"])
    assert len(files["Observation"]) == BY_TYPE["Observation"]
    assert len({x["id"] for x in files["Observation"]}) == BY_TYPE["Observation"]


async def test_capability_statement_lists_export(client: httpx.AsyncClient) -> None:
    cs = (await client.get("metadata")).json()
    rest = cs["rest"][0]
    base = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/"
    assert {"name": "export", "definition": base + "export"} in rest["operation"]
    ops = {r["type"]: r["operation"] for r in rest["resource"]}
    assert {"name": "export", "definition": base + "patient-export"} in ops["Patient"]
    assert {"name": "export", "definition": base + "group-export"} in ops["Group"]


# --- jobs a dead process left behind -----------------------------------------------------


def orphan(job_id: str, worker: str) -> dict[str, Any]:
    old = datetime.now(UTC) - timedelta(minutes=10)
    return {
        "_id": job_id,
        "status": "in-progress",
        "owner": None,
        "worker": worker,
        "request": "http://127.0.0.1:8080/fhir/$export",
        "transactionTime": old,
        "created": old,
        "heartbeat": old,
        "progress": "Patient (1 of 1 types)",
        "expires": old + timedelta(days=1),
    }


async def test_restart_marks_an_orphan_job_failed(mongo_uri: str) -> None:
    from fhir_server.app import create_app

    settings = make_settings(mongo_uri)
    job_id = "ab" * 16
    first = create_app(settings)
    async with first.router.lifespan_context(first):
        await first.state.ready
        ctx = first.state.ctx
        # A job some earlier process was running when it died (no task, old heartbeat).
        await JobStore(ctx.store.db, 5000).create(orphan(job_id, "a-dead-process"))
    second = create_app(settings)
    async with second.router.lifespan_context(second):
        await second.state.ready
        transport = httpx.ASGITransport(app=second)
        async with httpx.AsyncClient(transport=transport, base_url=BASE + "/fhir/") as c:
            doc = await second.state.ctx.store.db["bulk_jobs"].find_one({"_id": job_id})
            assert doc["status"] == "failed"  # at start-up, before anyone polled
            r = await c.get(f"$export-status/{job_id}")
            assert r.status_code == 500
            issue = r.json()["issue"][0]
            assert issue["code"] == "incomplete"
            assert "interrupted" in issue["diagnostics"]
        await second.state.ctx.store.client.drop_database(settings.database)


async def test_shutdown_fails_running_exports(
    mongo_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fhir_server.app import create_app

    # One resource per query: the seed takes hundreds of round trips, so the export is
    # still running when the app shuts down right after the kick-off.
    monkeypatch.setattr(bulk_run, "BATCH", 1)
    settings = make_settings(mongo_uri)
    await restore_seed(mongo_uri, settings.database, logins=False)
    first = create_app(settings)
    async with first.router.lifespan_context(first):
        await first.state.ready
        transport = httpx.ASGITransport(app=first)
        async with httpx.AsyncClient(transport=transport, base_url=BASE + "/fhir/") as c:
            location = await kick_off(c, "$export")
    second = create_app(settings)
    async with second.router.lifespan_context(second):
        await second.state.ready
        transport = httpx.ASGITransport(app=second)
        async with httpx.AsyncClient(transport=transport, base_url=BASE + "/fhir/") as c:
            r = await c.get(location)
            assert r.status_code == 503, r.text
            issue = r.json()["issue"][0]
            assert issue["code"] == "transient" and "again" in issue["diagnostics"]
            job_id = location.rsplit("/", 1)[1]
            files = second.state.ctx.store.db["bulk_files"]
            assert await files.count_documents({"job": job_id}) == 0
        await second.state.ctx.store.client.drop_database(settings.database)


async def test_poll_fails_a_job_whose_process_stopped_beating(client: httpx.AsyncClient) -> None:
    job_id = "cd" * 16
    db = client.app.state.ctx.store.db  # type: ignore[attr-defined]
    await JobStore(db, 5000).create(orphan(job_id, "another-process"))
    r = await client.get(f"$export-status/{job_id}")
    assert r.status_code == 500 and r.json()["issue"][0]["code"] == "incomplete"


# --- with tokens: who may poll and download ----------------------------------------------


@pytest.fixture(scope="module")
async def secured(mongo_uri: str) -> AsyncIterator[Server]:
    async with seeded_server(mongo_uri) as (_, http):
        yield Server(http)


async def backend_token(s: Server) -> str:
    key = RSAKey.import_key(BACKEND["jwk"])
    r = await request_token(s, assertion(key, BACKEND["client_id"], "RS384"))
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_backend_service_exports_and_only_it_can_poll(secured: Server) -> None:
    c, token = secured.http, await backend_token(secured)
    types = sorted(BY_TYPE)
    url = "/fhir/$export?" + str(httpx.QueryParams({"_type": ",".join(types)}))
    location = await kick_off(c, url, bearer(token))
    r = await poll(c, location, bearer(token))
    assert r.status_code == 200, r.text
    manifest = r.json()
    assert manifest["requiresAccessToken"] is True
    files = await download(c, manifest, bearer(token))
    assert counts(files) == dict(BY_TYPE)
    file_url = manifest["output"][0]["url"]
    # Without a token: 401. Another client (a user's app) or another user of the same app:
    # the same 404 as a job that does not exist.
    assert (await c.get(location)).status_code == 401
    sponsor = await secured.token("sponsor", "openid fhirUser user/*.cruds")
    spouse = await secured.token("spouse", "openid fhirUser user/*.cruds")
    missing = await c.get("/fhir/$export-status/" + "0" * 32, headers=bearer(sponsor))
    for other in (sponsor, spouse):
        for u in (location, file_url):
            r = await c.get(u, headers=bearer(other))
            assert r.status_code == 404, r.text
            assert r.json()["issue"][0]["code"] == missing.json()["issue"][0]["code"]
        assert (await c.delete(location, headers=bearer(other))).status_code == 404
    # The same user's job is theirs alone, even within one app.
    mine = await kick_off(c, "/fhir/$export?_type=Patient", bearer(sponsor))
    assert (await c.get(mine, headers=bearer(spouse))).status_code == 404
    assert (await poll(c, mine, bearer(sponsor))).status_code == 200
    # And the owner still reads everything after the others tried.
    assert (await c.get(file_url, headers=bearer(token))).status_code == 200


async def test_type_the_token_does_not_grant_is_403(secured: Server) -> None:
    c = secured.http
    token = await secured.token("sponsor", "openid fhirUser user/Patient.rs")
    r = await c.get("/fhir/$export?_type=Observation", headers={**ASYNC, **bearer(token)})
    assert r.status_code == 403 and r.json()["issue"][0]["code"] == "forbidden"
    # Without _type, ungranted types are simply left out.
    location = await kick_off(c, "/fhir/$export", bearer(token))
    manifest = (await poll(c, location, bearer(token))).json()
    assert {o["type"] for o in manifest["output"]} == {"Patient"}


async def test_a_grant_revoked_after_kick_off_hides_its_files_at_once(secured: Server) -> None:
    """The sponsor holds an adult son's records by an active Consent (seed_data/README.md);
    revoked after the export was written, the download no longer carries them."""
    c = secured.http
    store = c._transport.app.state.ctx.store  # type: ignore[attr-defined]
    token = await secured.token("sponsor", "openid fhirUser user/*.cruds")
    location = await kick_off(c, "/fhir/$export?_type=Condition", bearer(token))
    manifest = (await poll(c, location, bearer(token))).json()
    before = await download(c, manifest, bearer(token))
    ids = {x["id"] for x in before["Condition"]}
    assert {"cond-daniel-mcl-injury", "cond-liam-otitis-media", "cond-james-hypertension"} <= ids
    consent = (await store.current("Consent", "consent-daniel-proxy-james"))["res"]
    await store.update("Consent", consent["id"], {**consent, "status": "inactive"})
    try:
        lines = []
        for item in manifest["output"]:
            r = await c.get(item["url"], headers=bearer(token))
            lines += [orjson.loads(x) for x in r.content.splitlines()]
        after = {x["id"] for x in lines}
        assert "cond-daniel-mcl-injury" not in after
        # The child's (guardian, not grant) and the sponsor's own records stay.
        daniel = "Patient/dependent-daniel-carter"
        assert after == {
            x["id"] for x in before["Condition"] if x["subject"]["reference"] != daniel
        }
        assert {"cond-liam-otitis-media", "cond-james-hypertension"} <= after
    finally:
        await store.update("Consent", consent["id"], consent)
