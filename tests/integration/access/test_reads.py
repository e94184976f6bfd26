"""Reads as searches on `_id` under the policy, 410 against 404, the history of a deleted
resource, and what AuditEvents show the patients they name; real SMART tokens throughout.

https://hl7.org/fhir/R4/http.html#read (410 Gone), #history, https://profiles.ihe.net/ITI/BALP/
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from joserfc.jwk import RSAKey

from tests.integration.access.test_smart_enforcement import Server, ids
from tests.integration.auth.conftest import BACKEND
from tests.integration.auth.test_backend_services import assertion, request_token
from tests.integration.seeded import seeded_server

USER = "openid fhirUser user/*.cruds"
JAMES = "Patient/sponsor-james-carter"
SOPHIA = "Patient/adolescent-sophia-carter"
LIAM = "Patient/child-liam-carter"
EMMA = "Patient/dependent-emma-carter"
KIM = "Practitioner/pcm-rachel-kim"
WEIGHT = "obs-sophia-weight"
STI_CODE = "http://loinc.org|43304-5"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


def _obs(subject: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "read probe"},
        "subject": {"reference": subject},
        **extra,
    }


@dataclass
class Env:
    app: Any
    s: Server
    tokens: dict[str, str]

    async def get(self, who: str, url: str, **params: str) -> httpx.Response:
        return await self.s.get(self.tokens[who], url, **params)


async def _deleted_probes(store: Any) -> None:
    """Deleted resources: James's own (the sponsor and his clinician saw it), Emma's (the
    sponsor never could: an adult dependent with no grant), and Liam's, labelled in its
    last version (the sponsor saw version 1 only: the child band hides labelled records)."""
    await store.update("Observation", "gone-james", _obs(JAMES))
    await store.update("Observation", "gone-james", _obs(JAMES, status="amended"))
    await store.delete("Observation", "gone-james")
    await store.update("Observation", "gone-emma", _obs(EMMA))
    await store.delete("Observation", "gone-emma")
    await store.update("Observation", "gone-liam", _obs(LIAM))
    psy = {"security": [{"system": ACT, "code": "PSY"}]}
    await store.update("Observation", "gone-liam", _obs(LIAM, meta=psy))
    await store.delete("Observation", "gone-liam")


@pytest.fixture(scope="module")
async def env(mongo_uri: str) -> AsyncIterator[Env]:
    async with seeded_server(mongo_uri) as (app, http):
        await _deleted_probes(app.state.ctx.store)
        s = Server(http)
        key = RSAKey.import_key(BACKEND["jwk"])
        tokens = {}
        for name, scope in (
            ("backend", "system/*.rs"),
            ("backend-id", f"system/Observation.rs?_id={WEIGHT}"),
        ):
            r = await request_token(s, assertion(key, BACKEND["client_id"], "RS384"), scope)
            assert r.status_code == 200, r.text
            tokens[name] = r.json()["access_token"]
        for role in ("sponsor", "practitioner"):
            tokens[role] = await s.token(role, USER)
        yield Env(app, s, tokens)


async def test_an_id_scope_narrows_reads_and_never_replaces_the_id(env: Env) -> None:
    """Issue 6: `system/Observation.rs?_id=obs-sophia-weight` once answered 200 with that
    resource for any Observation id."""
    missing = await env.get("backend-id", "Observation/no-such-id")
    assert missing.status_code == 404, missing.text
    assert missing.json()["issue"][0]["code"] == "not-found"
    other = await env.get("backend-id", "Observation/obs-liam-peanut-ige")
    assert other.status_code == 404, other.text
    assert [i["code"] for i in other.json()["issue"]] == ["not-found"]
    mine = await env.get("backend-id", f"Observation/{WEIGHT}")
    assert mine.status_code == 200 and mine.json()["id"] == WEIGHT
    assert (await env.get("backend-id", f"Observation/{WEIGHT}/_history/1")).status_code == 200
    assert (await env.get("backend-id", "Observation/no-such-id/_history/1")).status_code == 404
    found = await env.get("backend-id", "Observation", _id="obs-liam-peanut-ige")
    assert found.status_code == 200 and ids(found.json()) == set()
    # A deleted resource under an `_id` scope answers as a missing one (docs/access.md).
    assert (await env.get("backend-id", "Observation/gone-james")).status_code == 404


async def test_deleted_reads_410_to_whoever_could_see_it_and_404_otherwise(env: Env) -> None:
    for who in ("sponsor", "practitioner", "backend"):
        r = await env.get(who, "Observation/gone-james")
        assert r.status_code == 410, (who, r.text)
        assert r.headers["etag"] == 'W/"3"'
        assert r.json()["issue"][0]["code"] == "deleted"
    missing = await env.get("sponsor", "Observation/no-such-gone")
    assert missing.status_code == 404
    for ref in ("Observation/gone-emma", "Observation/gone-liam"):
        hidden = await env.get("sponsor", ref)
        assert hidden.status_code == 404, (ref, hidden.text)
        assert [i["code"] for i in hidden.json()["issue"]] == ["not-found"]
        assert (await env.get("backend", ref)).status_code == 410
    # Emma's clinician (the same PCM) saw it: 410 for her.
    assert (await env.get("practitioner", "Observation/gone-emma")).status_code == 410
    # Earlier versions stay readable to whoever could see the resource.
    v1 = await env.get("sponsor", "Observation/gone-james/_history/1")
    assert v1.status_code == 200 and v1.json()["status"] == "final"
    assert (await env.get("sponsor", "Observation/gone-james/_history/3")).status_code == 410
    assert (await env.get("sponsor", "Observation/gone-emma/_history/1")).status_code == 404


async def test_the_history_of_a_deleted_resource_lists_its_versions(env: Env) -> None:
    for who in ("sponsor", "practitioner", "backend"):
        r = await env.get(who, "Observation/gone-james/_history")
        assert r.status_code == 200, (who, r.text)
        bundle = r.json()
        methods = [e["request"]["method"] for e in bundle["entry"]]
        assert methods == ["DELETE", "PUT", "PUT"], (who, methods)
        assert bundle["total"] == 3
        assert [e["response"]["etag"] for e in bundle["entry"]] == ['W/"3"', 'W/"2"', 'W/"1"']
        page = await env.get(who, "Observation/gone-james/_history", _count="2")
        assert [e["response"]["etag"] for e in page.json()["entry"]] == ['W/"3"', 'W/"2"']
        nxt = next(x["url"] for x in page.json()["link"] if x["relation"] == "next")
        rest = await env.s.http.get(
            "/fhir" + nxt.split("/fhir", 1)[1],
            headers={"Authorization": f"Bearer {env.tokens[who]}"},
        )
        assert [e["response"]["etag"] for e in rest.json()["entry"]] == ['W/"1"']
    missing = await env.get("sponsor", "Observation/no-such-gone/_history")
    for ref in ("Observation/gone-emma", "Observation/gone-liam"):
        hidden = await env.get("sponsor", f"{ref}/_history")
        assert hidden.status_code == missing.status_code == 404, hidden.text
    full = await env.get("backend", "Observation/gone-liam/_history")
    assert full.status_code == 200 and full.json()["total"] == 3


async def _flush(env: Env) -> None:
    await env.app.state.audit.flush()


def _events(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", [])]


def _query(event: dict[str, Any]) -> str | None:
    for e in event.get("entity", []):
        if e.get("role", {}).get("code") == "24":
            return base64.b64decode(e["query"]).decode()
    return None


def _named(event: dict[str, Any]) -> set[str]:
    return {e["what"]["reference"] for e in event.get("entity", []) if "what" in e}


async def test_a_patient_sees_only_their_part_of_a_multi_patient_search(env: Env) -> None:
    """Issue 9: a clinician's search for the sponsor and his adolescent, with an STI code,
    once showed the sponsor the adolescent's id and the code in his own AuditEvents."""
    r = await env.get("practitioner", "Observation", patient=f"{JAMES},{SOPHIA}", code=STI_CODE)
    assert r.status_code == 200, r.text
    await _flush(env)
    mine = await env.get("sponsor", "AuditEvent", patient=JAMES, _count="1000")
    assert mine.status_code == 200, mine.text
    by_kim = [
        e
        for e in _events(mine.json())
        if e["agent"][0]["who"] == {"reference": KIM} and e["subtype"][0]["code"] == "search-type"
    ]
    assert by_kim, "the sponsor still sees that his clinician searched his record"
    for event in by_kim:
        assert _named(event) == {JAMES}, event
        assert _query(event) is None, event
        assert "43304-5" not in str(event) and "sophia" not in str(event)
    # The auditors' event keeps the query whole, in no patient's compartment.
    audit = await env.get("backend", "AuditEvent", _count="1000", subtype="search-type")
    whole = [e for e in _events(audit.json()) if "43304-5" in (_query(e) or "")]
    assert whole and all(not (_named(e) & {JAMES, SOPHIA}) for e in whole)
    stored = await env.app.state.ctx.store.for_type("AuditEvent").find(
        {"rt": "AuditEvent", "_id": {"$in": [f"AuditEvent/{e['id']}" for e in whole]}}, {"comp": 1}
    )
    assert stored and all(d["comp"] == [] for d in stored)
    # The adolescent's own copy names her alone.
    theirs = await env.get("backend", "AuditEvent", patient=SOPHIA, _count="1000")
    copies = [e for e in _events(theirs.json()) if e["agent"][0]["who"] == {"reference": KIM}]
    assert copies and all(_named(e) == {SOPHIA} and _query(e) is None for e in copies)


async def test_audit_counts_in_a_hidden_compartment_equal_a_missing_ones(env: Env) -> None:
    r = await env.get("practitioner", "Observation", patient=f"{JAMES},{SOPHIA}")
    assert r.status_code == 200
    await _flush(env)
    counts = {}
    for patient in (SOPHIA, "Patient/no-such-patient"):
        c = await env.get("sponsor", "AuditEvent", patient=patient, _summary="count")
        assert c.status_code == 200, c.text
        counts[patient] = c.json()["total"]
    assert counts[SOPHIA] == counts["Patient/no-such-patient"] == 0, counts
