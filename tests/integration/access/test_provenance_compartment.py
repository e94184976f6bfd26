"""A Provenance sits in the patient compartments of its targets (profiles/access/
compartments.json): the veteran reads the Provenance of his own Observation, nobody else
does, a transaction writing both works, and a reindex keeps it. Real SMART tokens over HTTP.
https://hl7.org/fhir/R4/compartmentdefinition-patient.html
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from fhir_server.storage.reindex import reindex
from tests.integration.access.test_smart_enforcement import SPONSOR, Server, ids
from tests.integration.seeded import seeded_server

VETERAN = "Patient/veteran-samuel-ortiz"
SCOPE = "launch/patient patient/*.rs"


def observation() -> dict:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": VETERAN},
    }


def provenance(*targets: str) -> dict:
    return {
        "resourceType": "Provenance",
        "target": [{"reference": t} for t in targets],
        "recorded": "2026-01-05T10:00:00Z",
        "agent": [{"who": {"display": "VA partner import"}}],
    }


@pytest.fixture(scope="module")
async def server(mongo_uri: str) -> AsyncIterator[Server]:
    async with seeded_server(mongo_uri) as (app, http):
        store = app.state.ctx.store
        # One transaction writes the Observation and its Provenance, as a bundle does.
        async with store.client.start_session() as s, await s.start_transaction():
            await store.create("Observation", observation(), rid="prov-obs", session=s)
            await store.create(
                "Provenance", provenance("Observation/prov-obs"), rid="prov-1", session=s
            )
        # A Provenance of nothing stored stays in no compartment.
        await store.create("Provenance", provenance("Observation/absent"), rid="prov-none")
        server = Server(http)
        server.app = app  # type: ignore[attr-defined]
        yield server


async def check_visibility(server: Server) -> None:
    veteran = await server.token("veteran", SCOPE, patient=VETERAN)
    sponsor = await server.token("sponsor", SCOPE, patient=SPONSOR)

    r = await server.get(veteran, "Provenance/prov-1")
    assert r.status_code == 200, r.text
    found = await server.get(veteran, "Provenance", target="Observation/prov-obs")
    assert found.status_code == 200, found.text
    assert ids(found.json()) == {"Provenance/prov-1"}
    rev = await server.get(veteran, "Observation", _id="prov-obs", _revinclude="Provenance:target")
    assert rev.status_code == 200, rev.text
    included = {
        f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in rev.json()["entry"]
    }
    assert "Provenance/prov-1" in included
    assert (await server.get(veteran, "Provenance/prov-none")).status_code == 404
    # The post-check of versions and of $everything judges by the stored compartments too.
    assert (await server.get(veteran, "Provenance/prov-1/_history/1")).status_code == 200
    hist = await server.get(veteran, "Provenance/prov-1/_history")
    assert hist.status_code == 200, hist.text
    assert ids(hist.json()) == {"Provenance/prov-1"}
    every = await server.get(veteran, f"{VETERAN}/$everything", _count="1000")
    assert every.status_code == 200, every.text
    assert "Provenance/prov-1" in ids(every.json())

    assert (await server.get(sponsor, "Provenance/prov-1")).status_code == 404
    other = await server.get(sponsor, "Provenance", target="Observation/prov-obs")
    assert other.status_code == 200, other.text
    assert ids(other.json()) == set()


async def test_the_patient_reads_the_provenance_of_his_observation(server: Server):
    store = server.app.state.ctx.store  # type: ignore[attr-defined]
    doc = await store.current("Provenance", "prov-1")
    assert doc["comp"] == [VETERAN] and doc["sk"] == VETERAN
    hist = await store.latest_versions("Provenance", "prov-1", limit=1)
    assert hist[0]["comp"] == [VETERAN]
    await check_visibility(server)


async def test_reindex_keeps_inherited_compartments(server: Server):
    store = server.app.state.ctx.store  # type: ignore[attr-defined]
    await reindex(store)
    doc = await store.current("Provenance", "prov-1")
    assert doc["comp"] == [VETERAN]
    assert (await store.current("Provenance", "prov-none"))["comp"] == []
    await check_visibility(server)
