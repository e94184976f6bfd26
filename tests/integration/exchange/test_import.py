"""Bulk Data `$import` end to end: a partner registered with the CLI, NDJSON served by a
real local HTTP server, the seeded server with tokens required.

Expected counts come from the files as this test writes them (the Synthea bundles turned
into NDJSON, plus lines made invalid on purpose), never from the server.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import httpx
import orjson
import pytest
from joserfc.jwk import RSAKey

from fhir_server import clients_cli
from fhir_server.exchange.imports.ndjson import by_type, lines
from fhir_server.exchange.imports.provenance import provenance_id
from fhir_server.exchange.imports.run import blank_state
from fhir_server.exchange.imports.store import new_id, now
from fhir_server.exchange.imports.tasks import imports
from tests.conftest import make_settings, synthea_bundles
from tests.integration.auth.test_backend_services import assertion, request_token
from tests.integration.seeded import seeded_server

PARTNER = "partner-import-test"
ORG = "Organization/va-example-hcs"
ASYNC = {"Prefer": "respond-async", "Content-Type": "application/fhir+json"}
# Kept small: the embedded database writes some 20-50 resources a second on a busy machine.
SYNTHEA = by_type(b for _, b in synthea_bundles()[:1])
MORE_OBS = by_type(b for _, b in synthea_bundles()[1:2])["Observation"][:60]
BATCH = 20
BAD_LINES = [
    b"this is not json",
    orjson.dumps({"resourceType": "Patient", "id": "bad-gender", "gender": "robot"}),
    orjson.dumps({"resourceType": "Patient", "name": [{"family": "NoIdNoIdentifier"}]}),
    orjson.dumps({"resourceType": "Observation", "id": "wrong-file", "status": "final"}),
]


class Files:
    """A local HTTP file server: path -> bytes."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        files = self.files

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = files.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "application/fhir+ndjson")
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def put(self, path: str, body: bytes) -> str:
        self.files[path] = body
        return self.base + path


@pytest.fixture(scope="module")
def files() -> Iterator[Files]:
    f = Files()
    yield f
    f.server.shutdown()


def cli(settings: Any, *argv: str) -> int:
    parser = argparse.ArgumentParser()
    clients_cli.add_parser(parser.add_subparsers(dest="command"))
    return clients_cli.run(settings, parser.parse_args(["clients", *argv]))


class Partner:
    def __init__(self, http: httpx.AsyncClient, app: Any, key: RSAKey) -> None:
        self.http, self.app, self.key = http, app, key

    async def token(self, scope: str = "system/*.cruds") -> httpx.Response:
        return await request_token(self, assertion(self.key, PARTNER, "RS384"), scope)

    async def bearer(self) -> dict[str, str]:
        r = await self.token()
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['access_token']}"}


@pytest.fixture(scope="module")
async def partner(mongo_uri: str, files: Files) -> AsyncIterator[Partner]:
    async with seeded_server(mongo_uri) as (app, http):
        key = RSAKey.generate_key(2048, parameters={"alg": "RS384", "kid": "partner-1"})
        jwks = orjson.dumps({"keys": [key.as_dict(private=False)]}).decode()
        settings = make_settings(mongo_uri, database=app.state.ctx.settings.database)
        code = await anyio.to_thread.run_sync(
            lambda: cli(
                settings, "add", PARTNER, "--scope", "system/*.cruds", "--jwks", jwks,
                "--organization", ORG, "--import-url", files.base + "/partner/",
                "--import-url", "http://10.1.2.3/partner/",
            )
        )  # fmt: skip
        assert code == 0
        yield Partner(http, app, key)


def parameters(*inputs: tuple[str, str]) -> dict[str, Any]:
    return {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "inputFormat", "valueCode": "application/fhir+ndjson"},
            {"name": "storageDetail", "part": [{"name": "type", "valueCode": "http"}]},
            *(
                {"name": "input", "part": [{"name": "type", "valueCode": t}, {"name": "url", "valueUri": u}]}
                for t, u in inputs
            ),
        ],
    }  # fmt: skip


async def run_import(p: Partner, auth: dict[str, str], *inputs: tuple[str, str]) -> dict[str, Any]:
    r = await p.http.post("/fhir/$import", json=parameters(*inputs), headers={**ASYNC, **auth})
    assert r.status_code == 202, r.text
    return await finish(p, auth, r.headers["content-location"])


async def finish(p: Partner, auth: dict[str, str], location: str) -> dict[str, Any]:
    for _ in range(1200):
        s = await p.http.get(location, headers=auth)
        if s.status_code != 202:
            assert s.status_code == 200, s.text
            return dict(s.json())
        assert s.headers["x-progress"]
        await asyncio.sleep(0.1)
    raise AssertionError("the import did not finish in 2 minutes")


async def provenance_targets(p: Partner, auth: dict[str, str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    url: str | None = "/fhir/Provenance?_count=500"
    while url:
        r = await p.http.get(url, headers=auth)
        assert r.status_code == 200, r.text
        b = r.json()
        for e in b.get("entry", []):
            for t in e["resource"].get("target", []):
                out[t["reference"]] = e["resource"]
        url = next((x["url"] for x in b.get("link", []) if x["relation"] == "next"), None)
    return out


def plan(files: Files) -> tuple[list[tuple[str, str]], dict[str, int]]:
    inputs, expected = [], {}
    for rt in ("Patient", "Organization", "Practitioner", "Encounter", "Observation", "Condition"):
        body = lines(SYNTHEA[rt])
        if rt == "Patient":
            body += b"\n".join(BAD_LINES) + b"\n"
        inputs.append((rt, files.put(f"/partner/{rt}.ndjson", body)))
        expected[rt] = len(SYNTHEA[rt])
    return inputs, expected


async def test_import_counts_provenance_errors_and_idempotence(
    partner: Partner, files: Files
) -> None:
    auth = await partner.bearer()
    inputs, expected = plan(files)
    manifest = await run_import(partner, auth, *inputs)
    got = {o["type"]: o for o in manifest["output"]}
    for rt, n in expected.items():
        assert got[rt]["created"] + got[rt]["updated"] == n, (rt, manifest)
    # The invalid lines, and only they, are refused, each with its OperationOutcome.
    assert [e["count"] for e in manifest["error"]] == [len(BAD_LINES)]
    r = await partner.http.get(manifest["error"][0]["url"], headers=auth)
    assert r.status_code == 200
    outcomes = [orjson.loads(x) for x in r.content.splitlines()]
    assert len(outcomes) == len(BAD_LINES)
    assert all(o["resourceType"] == "OperationOutcome" for o in outcomes)
    assert all(o["issue"][0]["diagnostics"].startswith("line ") for o in outcomes)
    # Every imported resource carries a Provenance naming the partner and the file.
    targets = await provenance_targets(partner, auth)
    for (rt, url), resources in zip(inputs, [SYNTHEA[t] for t, _ in inputs], strict=True):
        for res in resources:
            cur = await partner.http.get(f"/fhir/{rt}/{res['id']}", headers=auth)
            assert cur.status_code == 200, cur.text
            vid = cur.json()["meta"]["versionId"]
            prov = targets[f"{rt}/{res['id']}/_history/{vid}"]
            who = [a["who"] for a in prov["agent"]]
            assert {"reference": ORG} in who
            assert any(w.get("identifier", {}).get("value") == PARTNER for w in who)
            assert prov["entity"][0]["what"]["identifier"]["value"] == url
    # The same files again change nothing: no new version, no new Provenance.
    again = await run_import(partner, auth, *inputs)
    for o in again["output"]:
        assert (o["created"], o["updated"], o["unchanged"]) == (0, 0, expected[o["type"]]), o
    assert await provenance_targets(partner, auth) == targets


async def test_a_job_stopped_mid_file_resumes_where_it_stopped(
    partner: Partner, files: Files
) -> None:
    auth = await partner.bearer()
    url = files.put("/partner/more-observations.ndjson", lines(MORE_OBS))
    jobs = imports(partner.app.state.ctx)
    # Several batches in the file: a checkpoint to stop after (the table is the process's).
    jobs.table = replace(jobs.table, batch_lines=BATCH)
    assert len(MORE_OBS) > 2 * BATCH
    r = await partner.http.post(
        "/fhir/$import", json=parameters(("Observation", url)), headers={**ASYNC, **auth}
    )
    assert r.status_code == 202, r.text
    job_id = r.headers["content-location"].rsplit("/", 1)[1]
    store = jobs.store(partner.app.state.ctx)
    for _ in range(600):
        doc = await store.get(job_id)
        assert doc is not None
        if doc["inputs"][0]["state"]["line"] > 0:
            break
        await asyncio.sleep(0.02)
    line = doc["inputs"][0]["state"]["line"]
    assert 0 < line < len(MORE_OBS)
    # The process stops: its task is cancelled and hands the lease back; the poller (the
    # restarted process's) takes the job up from the checkpoint.
    jobs.cancel(job_id)
    manifest = await finish(partner, auth, r.headers["content-location"])
    jobs.table = replace(jobs.table, batch_lines=200)
    done = await store.get(job_id)
    assert done is not None and done.get("resumed", 0) >= 1
    o = manifest["output"][0]
    assert o["created"] + o["updated"] + o["unchanged"] == len(MORE_OBS)
    assert o["created"] == len(MORE_OBS) - o["unchanged"] - o["updated"]
    # Nothing duplicated: each Observation exists once, by its id.
    r = await partner.http.get(
        "/fhir/Observation", params={"_id": ",".join(x["id"] for x in MORE_OBS[:50]), "_summary": "count"},
        headers=auth,
    )  # fmt: skip
    assert r.json()["total"] == 50


async def test_a_job_whose_process_died_is_taken_up_when_its_lease_runs_out(
    partner: Partner, files: Files
) -> None:
    """A process killed mid-job leaves its claim and a lease in the past (no hand-back):
    the job as such a process leaves it is written here, and a live process's poller takes
    it up from its last checkpoint."""
    auth = await partner.bearer()
    obs = by_type(b for _, b in synthea_bundles()[2:3])["Observation"][:30]
    url = files.put("/partner/died.ndjson", lines(obs))
    ctx = partner.app.state.ctx
    store = imports(ctx).store(ctx)
    # Lines 1-10 were written and checkpointed by the dead process; this test writes
    # them itself, so the resumed job must find them unchanged and go on from line 11.
    done = [x for x in obs[:10]]
    for res in done:
        r = await partner.http.put(f"/fhir/Observation/{res['id']}", json=res, headers=auth)
        assert r.status_code == 201, r.text
    t = now()
    job_id = new_id()
    await store.create(
        {
            "_id": job_id,
            "status": "in-progress",
            "owner": {"client": PARTNER, "subject": PARTNER, "user": None},
            "partner": {"client": PARTNER, "organization": ORG},
            "auth": {"subject": PARTNER, "client_id": PARTNER, "scope": "system/*.cruds"},
            "request": "http://127.0.0.1:8080/fhir/$import",
            "inputs": [
                {
                    "type": "Observation",
                    "url": url,
                    "state": {**blank_state(), "line": 10, "created": 10},
                }
            ],
            "transactionTime": t,
            "created": t,
            "claim": new_id(),
            "worker": "a-process-that-died",
            "lease": t - timedelta(seconds=1),
            "progress": "file 1 of 1, line 10",
            "expires": t + timedelta(hours=1),
        }
    )
    manifest = await finish(partner, auth, f"/fhir/$import-status/{job_id}")
    o = manifest["output"][0]
    # Lines 11-30 were written by the process that took the job up; 1-10 not again.
    assert (o["created"], o["updated"], o["unchanged"]) == (30, 0, 0), o
    doc = await store.get(job_id)
    assert doc is not None and doc["resumed"] == 1 and doc["worker"] == imports(ctx).worker


async def test_urls_not_registered_or_inward_are_refused(partner: Partner, files: Files) -> None:
    auth = await partner.bearer()
    for url in (
        files.base + "/elsewhere/Patient.ndjson",  # not under a registered prefix
        "http://10.1.2.3/partner/Patient.ndjson",  # registered, but a private network
        "http://169.254.169.254/partner/x.ndjson",  # cloud metadata
        "file:///etc/passwd",
    ):
        r = await partner.http.post(
            "/fhir/$import", json=parameters(("Patient", url)), headers={**ASYNC, **auth}
        )
        assert r.status_code in (400, 403), (url, r.text)
        assert r.json()["resourceType"] == "OperationOutcome"


async def test_a_partners_transaction_gets_provenance(partner: Partner) -> None:
    auth = await partner.bearer()
    patient = {
        "resourceType": "Patient",
        "id": "tx-partner-1",
        "identifier": [{"system": "urn:oid:2.16.840.1.113883.4.349", "value": "TX1000001"}],
        "gender": "male",
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "identifier": {"system": "https://va.example.org/bundles", "value": "b-1"},
        "entry": [
            {"resource": patient, "request": {"method": "PUT", "url": "Patient/tx-partner-1"}}
        ],
    }
    r = await partner.http.post(
        "/fhir", json=bundle, headers={**auth, "Content-Type": "application/fhir+json"}
    )
    assert r.status_code == 200, r.text
    target = "Patient/tx-partner-1/_history/1"
    p = await partner.http.get(f"/fhir/Provenance/{provenance_id(target)}", headers=auth)
    assert p.status_code == 200, p.text
    prov = p.json()
    assert prov["target"] == [{"reference": target}]
    assert prov["entity"][0]["what"]["identifier"]["value"] == "https://va.example.org/bundles|b-1"
    assert {"reference": ORG} in [a["who"] for a in prov["agent"]]
    # The same bundle again changes nothing, so it stamps nothing new.
    r = await partner.http.post(
        "/fhir", json=bundle, headers={**auth, "Content-Type": "application/fhir+json"}
    )
    assert r.status_code == 200, r.text
    again = await partner.http.get(f"/fhir/Provenance/{provenance_id(target)}", headers=auth)
    assert again.json()["meta"]["versionId"] == prov["meta"]["versionId"]


async def test_disabling_the_partner_revokes_its_tokens(partner: Partner, mongo_uri: str) -> None:
    auth = await partner.bearer()
    assert (await partner.http.get("/fhir/Patient?_count=1", headers=auth)).status_code == 200
    settings = make_settings(mongo_uri, database=partner.app.state.ctx.settings.database)
    assert await anyio.to_thread.run_sync(lambda: cli(settings, "disable", PARTNER)) == 0
    # The CLI is another process: the server learns of it from the revocation feed, within
    # a second (docs/smart.md, "Token cache").
    for _ in range(60):
        r = await partner.http.get("/fhir/Patient?_count=1", headers=auth)
        if r.status_code != 200:
            break
        await asyncio.sleep(0.1)
    assert r.status_code == 401, r.text
    assert (await partner.token()).status_code in (400, 401)
    assert await anyio.to_thread.run_sync(lambda: cli(settings, "enable", PARTNER)) == 0
    assert (await partner.token()).status_code == 200
