"""SMART tokens on the FHIR API: the whole server (create_app) with tokens required.

Tokens come from the real authorization pages (login + consent) and the real token
endpoint; the seed population is loaded. Each rule is checked both ways.
https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from joserfc.jwk import RSAKey

from tests.integration.auth.conftest import BACKEND, BASE, authorize, exchange
from tests.integration.auth.test_backend_services import assertion, request_token
from tests.integration.seeded import seeded_server

SPONSOR = "Patient/sponsor-james-carter"
OTHER = "Patient/veteran-samuel-ortiz"
LAB = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"


@dataclass
class Server:
    http: httpx.AsyncClient

    async def token(self, role: str, scope: str, patient: str | None = None) -> str:
        async with httpx.AsyncClient(transport=self.http._transport, base_url=BASE) as browser:
            auth = await authorize(browser, role, scope, patient=patient)
            r = await exchange(browser, auth)
            assert r.status_code == 200, r.text
            return str(r.json()["access_token"])

    async def get(self, token: str, url: str, **params: str) -> httpx.Response:
        return await self.http.get(
            f"/fhir/{url}", params=params, headers={"Authorization": f"Bearer {token}"}
        )

    async def post(self, token: str, url: str, body: dict) -> httpx.Response:
        return await self.http.post(
            f"/fhir/{url}",
            json=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"},
        )


@pytest.fixture(scope="module")
async def server(mongo_uri: str) -> AsyncIterator[Server]:
    async with seeded_server(mongo_uri) as (_, http):
        yield Server(http)


def ids(bundle: dict) -> set[str]:
    return {
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if e.get("search", {}).get("mode", "match") == "match"
    }


def subjects(bundle: dict) -> set[str]:
    return {e["resource"].get("subject", {}).get("reference") for e in bundle.get("entry", [])}


async def test_no_token_is_401_but_metadata_is_open(server: Server):
    r = await server.http.get("/fhir/Patient")
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["resourceType"] == "OperationOutcome"
    bad = await server.http.get("/fhir/Patient", headers={"Authorization": "Bearer nonsense"})
    assert bad.status_code == 401
    assert 'error="invalid_token"' in bad.headers["www-authenticate"]
    meta = await server.http.get("/fhir/metadata")
    assert meta.status_code == 200
    security = meta.json()["rest"][0]["security"]
    uris = [x for x in security["extension"] if x["url"].endswith("StructureDefinition/oauth-uris")]
    assert uris, security


async def test_patient_token_sees_only_its_patient(server: Server):
    token = await server.token("sponsor", "launch/patient patient/*.cruds", patient=SPONSOR)
    own = await server.get(token, SPONSOR)
    assert own.status_code == 200
    hidden = await server.get(token, OTHER)
    missing = await server.get(token, "Patient/no-such-patient")
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["issue"][0]["code"] == missing.json()["issue"][0]["code"]
    observations = (await server.get(token, "Observation", _count="200")).json()
    assert observations["entry"], "the sponsor has observations"
    assert subjects(observations) == {SPONSOR}
    everyone = (await server.get(token, "Patient")).json()
    assert ids(everyone) == {SPONSOR}
    assert everyone["total"] == 1
    # Another patient's data does not show through chains or history either.
    chained = (await server.get(token, "Observation", **{"subject:Patient.family": "Ortiz"})).json()
    assert ids(chained) == set()
    history = (await server.get(token, "Observation/_history", _count="500")).json()
    assert all(
        e["resource"]["subject"]["reference"] == SPONSOR
        for e in history["entry"]
        if "resource" in e
    )
    assert (await server.get(token, f"{OTHER}/_history")).status_code == 404


async def test_patient_token_writes_only_into_its_compartment(server: Server):
    token = await server.token("sponsor", "launch/patient patient/*.cruds", patient=SPONSOR)
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "steps"},
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "activity",
                    }
                ]
            }
        ],
        "subject": {"reference": SPONSOR},
    }
    assert (await server.post(token, "Observation", obs)).status_code == 201
    elsewhere = {**obs, "subject": {"reference": OTHER}}
    r = await server.post(token, "Observation", elsewhere)
    assert r.status_code == 403
    assert r.json()["issue"][0]["code"] == "forbidden"


async def test_type_or_interaction_not_granted_is_403(server: Server):
    token = await server.token("sponsor", "launch/patient patient/Observation.rs", patient=SPONSOR)
    assert (await server.get(token, "Observation")).status_code == 200
    assert (await server.get(token, SPONSOR)).status_code == 403
    write = await server.post(
        token,
        "Observation",
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": SPONSOR},
        },
    )
    assert write.status_code == 403
    # Inside a batch each entry is checked on its own.
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": "Observation?_count=1"}},
            {"request": {"method": "GET", "url": SPONSOR}},
        ],
    }
    out = (await server.post(token, "", batch)).json()
    assert [e["response"]["status"][:3] for e in out["entry"]] == ["200", "403"]
    # Included resources of a type not granted stay out.
    reports = (await server.get(token, "Observation", _include="Observation:subject")).json()
    assert not any(e["resource"]["resourceType"] == "Patient" for e in reports["entry"])


async def test_query_qualified_scope_narrows_search_and_read(server: Server):
    token = await server.token(
        "sponsor", f"launch/patient patient/Observation.rs?category={LAB}", patient=SPONSOR
    )
    full = await server.token("sponsor", "launch/patient patient/Observation.rs", patient=SPONSOR)
    everything = (await server.get(full, "Observation", _count="200")).json()
    labs = (await server.get(token, "Observation", _count="200")).json()
    assert ids(labs) and ids(labs) < ids(everything)
    for e in labs["entry"]:
        codes = {
            c.get("code")
            for cat in e["resource"].get("category", [])
            for c in cat.get("coding", [])
        }
        assert "laboratory" in codes
    not_lab = sorted(ids(everything) - ids(labs))[0]
    assert (await server.get(full, not_lab)).status_code == 200
    assert (await server.get(token, not_lab)).status_code == 404


async def test_backend_service_system_scope(server: Server):
    key = RSAKey.import_key(BACKEND["jwk"])
    r = await request_token(server, assertion(key, BACKEND["client_id"], "RS384"))
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    assert (await server.get(token, OTHER)).status_code == 200
    assert (await server.get(token, SPONSOR)).status_code == 200
    assert ids((await server.get(token, "Patient", _count="100")).json()) >= {SPONSOR, OTHER}
    create = await server.post(token, "Patient", {"resourceType": "Patient"})
    assert create.status_code == 403
