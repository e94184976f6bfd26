"""A proxy grant is read whole: scope, classes and nested exceptions (family policy).

Daniel (an adult dependent) grants his father, the sponsor, proxy access by a Consent. Over
HTTP with real tokens, Daniel rewrites his Consent and the sponsor's next request sees what
the new provisions allow; a provision the policy cannot apply is refused on write (422).
https://hl7.org/fhir/R4/consent.html#provision
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.integration.access.test_smart_enforcement import Server, ids
from tests.integration.seeded import seeded_server

DANIEL = "Patient/dependent-daniel-carter"
CONSENT = "Consent/consent-daniel-proxy-james"
RTYPES = "http://hl7.org/fhir/resource-types"
TYPES = ("Condition", "Immunization", "Observation", "Encounter")


@pytest.fixture(scope="module")
async def server(mongo_uri: str) -> AsyncIterator[Server]:
    async with seeded_server(mongo_uri) as (_, http):
        yield Server(http)


async def test_consent_provisions(server: Server):
    daniel = await server.token("daniel.carter", "openid fhirUser user/Consent.cruds")
    james = await server.token("sponsor", "openid fhirUser user/*.rs")
    original = (await server.get(daniel, CONSENT)).json()
    assert original["resourceType"] == "Consent", original

    async def put(consent: dict[str, Any]) -> int:
        r = await server.http.put(
            f"/fhir/{CONSENT}",
            json=consent,
            headers={
                "Authorization": f"Bearer {daniel}",
                "Content-Type": "application/fhir+json",
            },
        )
        assert r.status_code in (200, 201, 422), r.text
        return r.status_code

    async def seen() -> dict[str, bool]:
        out = {}
        for rt in TYPES:
            r = await server.get(james, rt, patient=DANIEL, _count="100")
            out[rt] = bool(ids(r.json()))
        out["Patient"] = (await server.get(james, DANIEL)).status_code == 200
        return out

    before = await seen()
    assert before["Condition"] and before["Immunization"] and before["Patient"], before

    def with_provision(**changes: Any) -> dict[str, Any]:
        c = copy.deepcopy(original)
        c.pop("meta", None)
        c["provision"].update(changes)
        return c

    condition = [{"system": RTYPES, "code": "Condition"}]
    # A nested deny for Condition: everything else stays.
    assert await put(with_provision(provision=[{"type": "deny", "class": condition}])) == 200
    after = await seen()
    assert not after["Condition"] and after == {**before, "Condition": False}
    # The grant limited to Immunization.
    only = with_provision(**{"class": [{"system": RTYPES, "code": "Immunization"}]})
    assert await put(only) == 200
    after = await seen()
    assert after["Immunization"] and not any(v for k, v in after.items() if k != "Immunization")
    # A research consent is no proxy grant.
    research = with_provision()
    research["scope"] = {
        "coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "research"}
        ]
    }
    assert await put(research) == 200
    assert not any((await seen()).values())
    # A provision the policy cannot apply is refused, naming the element.
    refused = await server.http.put(
        f"/fhir/{CONSENT}",
        json=with_provision(securityLabel=[{"code": "PSY"}]),
        headers={"Authorization": f"Bearer {daniel}", "Content-Type": "application/fhir+json"},
    )
    assert refused.status_code == 422, refused.text
    issue = refused.json()["issue"][0]
    assert issue["code"] == "business-rule"
    assert issue["expression"] == ["Consent.provision.securityLabel"]
    # Back to the original grant: the sponsor sees what he saw.
    assert await put(with_provision()) == 200
    assert await seen() == before
