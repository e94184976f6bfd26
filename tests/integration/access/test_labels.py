"""Security labels the policy must see however they are spelled and wherever they sit.

Dr. Kim (the child's PCM) writes labelled resources on Liam's record over HTTP; his father
(the sponsor) may see the child's record except what is labelled sensitive. Each spelling
of `R` (no system, the old v3 system, lower case, a trailing slash) and a DocumentReference
labelled only in `securityLabel` must stay hidden from him; the reindex applies the same to
data stored before the normalisation.
https://hl7.org/fhir/R4/security-labels.html
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from fhir_server.storage.reindex import reindex
from tests.integration.access.test_smart_enforcement import Server
from tests.integration.seeded import seeded_server

LIAM = "Patient/child-liam-carter"
CONF = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
SPELLINGS = {
    "no-system": {"code": "R"},
    "old-system": {"system": "http://hl7.org/fhir/v3/Confidentiality", "code": "R"},
    "lower-case": {"system": CONF, "code": "r"},
    "trailing-slash": {"system": f"{CONF}/", "code": "R"},
}


@pytest.fixture(scope="module")
async def env(mongo_uri: str) -> AsyncIterator[tuple[Any, Server]]:
    async with seeded_server(mongo_uri) as (app, http):
        yield app.state.ctx.store, Server(http)


def _observation(label: dict[str, str] | None) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "Note"},
        "subject": {"reference": LIAM},
    }
    if label:
        res["meta"] = {"security": [label]}
    return res


async def test_every_spelling_of_a_sensitive_label_hides_the_resource(env):
    store, server = env
    kim = await server.token("dr.rachel.kim", "openid fhirUser user/*.cruds")
    james = await server.token("sponsor", "openid fhirUser user/*.rs")
    written: dict[str, str] = {}
    for name, label in {**SPELLINGS, "unlabelled": None}.items():
        r = await server.post(kim, "Observation", _observation(label))
        assert r.status_code == 201, r.text
        written[name] = f"Observation/{r.json()['id']}"
    doc = {
        "resourceType": "DocumentReference",
        "status": "current",
        "subject": {"reference": LIAM},
        "securityLabel": [{"coding": [{"system": CONF, "code": "R"}]}],
        "content": [{"attachment": {"contentType": "text/plain", "data": "bm90ZQ=="}}],
    }
    r = await server.post(kim, "DocumentReference", doc)
    assert r.status_code == 201, r.text
    written["securityLabel"] = f"DocumentReference/{r.json()['id']}"
    for name, ref in written.items():
        status = (await server.get(james, ref)).status_code
        assert status == (200 if name == "unlabelled" else 404), (name, status)
    # The label is stored as the table spells it.
    stored = (await server.get(kim, written["lower-case"])).json()
    assert stored["meta"]["security"][0] == {"system": CONF, "code": "R"}


async def test_reindex_applies_the_spelling_to_existing_data(env):
    store, server = env
    james = await server.token("sponsor", "openid fhirUser user/*.rs")
    doc = store.document(
        "Observation", "obs-liam-old-label", 1, _observation(SPELLINGS["no-system"])
    )
    # Stored as an older server would have: the label as written, its keys without it.
    doc["res"]["meta"]["security"] = [SPELLINGS["no-system"]]
    doc["ix"]["k"] = [k for k in doc["ix"]["k"] if not k.startswith("_security")]
    await store.resources.insert_one(doc)
    await reindex(store)
    stored = await store.resources.find_one({"_id": "Observation/obs-liam-old-label"})
    assert f"_security={CONF}|R" in stored["ix"]["k"]
    assert (await server.get(james, "Observation/obs-liam-old-label")).status_code == 404
