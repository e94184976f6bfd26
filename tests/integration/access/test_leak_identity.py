"""SSN masking on every path (profiles/exchange/identifiers.json, `masked`): no answer to a
patient, proxy or clinician token carries a whole SSN, on read, vread, search, includes,
history, `$everything`, `$export`, `$match`, `$ihe-pix` and write answers; searching by it
is refused without a `system/` scope, and so is any identifier or word search by an
SSN-shaped value (`_content`, `_text`, a bare `identifier` value, `:of-type`, a chain); AuditEvent query texts carry it masked. The backend service's
`system/*.rs` token is the positive control: it sees every SSN whole.

The SSNs are the seed's declared ones (seed_data/identities.py), not read from the server.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from joserfc.jwk import RSAKey

from seed_data.directory import PEOPLE
from seed_data.identities import ssn_of
from tests.integration.access.test_smart_enforcement import Server
from tests.integration.auth.conftest import BACKEND
from tests.integration.auth.test_backend_services import assertion, request_token
from tests.integration.seeded import seeded_server

SSN = "http://hl7.org/fhir/sid/us-ssn"
EDIPI = "http://mhs.example.org/fhir/sid/edipi"
SSNS = {key: ssn_of(p.edipi) for key, p in PEOPLE.items()}
JAMES = f"Patient/{PEOPLE['james'].id}"
SOPHIA = f"Patient/{PEOPLE['sophia'].id}"


@dataclass
class World:
    app: Any
    server: Server
    tokens: dict[str, str]


@pytest.fixture(scope="module")
async def world(mongo_uri: str) -> AsyncIterator[World]:
    async with seeded_server(mongo_uri) as (app, http):
        server = Server(http)
        key = RSAKey.import_key(BACKEND["jwk"])
        r = await request_token(server, assertion(key, BACKEND["client_id"], "RS384"))
        assert r.status_code == 200, r.text
        tokens = {"backend": r.json()["access_token"]}
        for role in ("sponsor", "practitioner"):
            tokens[role] = await server.token(role, "openid fhirUser user/*.cruds")
        yield World(app, server, tokens)


def _no_whole_ssn(text: str, where: str) -> None:
    for key, ssn in SSNS.items():
        assert ssn not in text, f"{where}: {key}'s whole SSN"


def _ssn_values(patient: dict[str, Any]) -> list[str]:
    return [i["value"] for i in patient.get("identifier", []) if i.get("system") == SSN]


async def _export_text(w: World, token: str) -> str:
    http, auth = w.server.http, {"Authorization": f"Bearer {token}"}
    r = await http.get("/fhir/Patient/$export", headers={**auth, "Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    location = r.headers["content-location"]
    for _ in range(2400):
        r = await http.get(location, headers=auth)
        if r.status_code != 202:
            break
        await asyncio.sleep(0.05)
    assert r.status_code == 200, r.text
    lines = []
    for item in r.json()["output"]:
        f = await http.get(item["url"], headers=auth)
        assert f.status_code == 200
        lines.append(f.text)
    return "\n".join(lines)


def _match_body(resource: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": resource}]}


@pytest.mark.parametrize("actor", ["sponsor", "practitioner"])
async def test_no_whole_ssn_on_any_path(world: World, actor: str) -> None:
    s, tok = world.server, world.tokens[actor]
    james = PEOPLE["james"]
    reads = [
        (JAMES, {}),
        (f"{JAMES}/_history/1", {}),
        (f"{JAMES}/_history", {}),
        ("Patient", {"_id": james.id}),
        ("Patient", {"_count": "100"}),
        ("Patient", {"_id": james.id, "_revinclude": "Observation:patient"}),
        ("Observation", {"patient": JAMES, "_include": "Observation:patient", "_count": "5"}),
        (f"{JAMES}/$everything", {}),
        ("Patient/$everything", {}),
        ("Patient", {"identifier": f"{EDIPI}|{james.edipi}"}),
    ]
    seen_masked = 0
    for url, params in reads:
        r = await s.get(tok, url, **params)
        assert r.status_code == 200, (url, r.text)
        _no_whole_ssn(r.text, f"{actor} {url} {params}")
        seen_masked += r.text.count("*****" + SSNS["james"][-4:])
    assert seen_masked >= len(reads) - 1, "the masked SSN is shown (last four digits)"
    _no_whole_ssn(await _export_text(world, tok), f"{actor} $export")
    # $match and $ihe-pix answer masked too.
    given = {"resourceType": "Patient", "identifier": [{"system": EDIPI, "value": james.edipi}]}
    r = await s.post(tok, "Patient/$match", _match_body(given))
    assert r.status_code == 200, r.text
    assert [e["resource"]["id"] for e in r.json()["entry"]] == [james.id]
    _no_whole_ssn(r.text, f"{actor} $match")
    r = await s.get(tok, "Patient/$ihe-pix", sourceIdentifier=f"{EDIPI}|{james.edipi}")
    assert r.status_code == 200, r.text
    assert "*****" + SSNS["james"][-4:] in r.text
    _no_whole_ssn(r.text, f"{actor} $ihe-pix")


@pytest.mark.parametrize("actor", ["sponsor", "practitioner"])
async def test_searching_by_ssn_needs_a_system_scope_and_nothing_else_reaches_it(
    world: World, actor: str
) -> None:
    s, tok = world.server, world.tokens[actor]
    ssn = SSNS["james"]
    refused = (
        {"identifier": f"{SSN}|{ssn}"},
        {"identifier": f"{SSN}|{ssn[-4:]}"},
        {"_has:Observation:patient:_id": "x", "identifier": f"{SSN}|{ssn}"},
        {"identifier": ssn},
        {"identifier:of-type": f"http://terminology.hl7.org/CodeSystem/v2-0203|SS|{ssn}"},
        {"_text": ssn},
        {"_content": ssn},
    )
    for params in refused:
        r = await s.get(tok, "Patient", **params)
        assert r.status_code == 403, (params, r.text)
        assert r.json()["issue"][0]["code"] == "forbidden"
    # Chained from another type too.
    r = await s.get(tok, "Observation", **{"patient.identifier": ssn})
    assert r.status_code == 403, r.text


async def test_a_system_token_sees_and_searches_the_whole_ssn(world: World) -> None:
    s, tok = world.server, world.tokens["backend"]
    r = await s.get(tok, JAMES)
    assert _ssn_values(r.json()) == [SSNS["james"]]
    r = await s.get(tok, "Patient", identifier=f"{SSN}|{SSNS['james']}")
    assert [e["resource"]["id"] for e in r.json()["entry"]] == [PEOPLE["james"].id]
    r = await s.get(tok, "Patient", identifier=SSNS["james"])
    assert [e["resource"]["id"] for e in r.json()["entry"]] == [PEOPLE["james"].id]
    assert SSNS["james"] in await _export_text(world, tok)


async def test_writing_back_what_was_read_keeps_the_stored_ssn(world: World) -> None:
    s, tok = world.server, world.tokens["sponsor"]
    me = (await s.get(tok, JAMES)).json()
    assert _ssn_values(me) == ["*****" + SSNS["james"][-4:]]
    me["telecom"] = [*me.get("telecom", []), {"system": "phone", "value": "757-555-0999"}]
    r = await s.http.put(
        f"/fhir/{JAMES}",
        json=me,
        headers={"Authorization": f"Bearer {tok}", "Content-Type": "application/fhir+json"},
    )
    assert r.status_code == 200, r.text
    _no_whole_ssn(r.text, "the write answer")
    assert _ssn_values(r.json()) == ["*****" + SSNS["james"][-4:]]
    whole = (await s.get(world.tokens["backend"], JAMES)).json()
    assert _ssn_values(whole) == [SSNS["james"]], "the stored SSN is unchanged"
    # A masked value that is not the one shown cannot be stored.
    me = r.json()
    for i in me["identifier"]:
        if i["system"] == SSN:
            i["value"] = "*****0000"
    r = await s.http.put(
        f"/fhir/{JAMES}",
        json=me,
        headers={"Authorization": f"Bearer {tok}", "Content-Type": "application/fhir+json"},
    )
    assert r.status_code == 422, r.text


async def test_audit_event_query_texts_carry_no_whole_ssn(world: World) -> None:
    s = world.server
    ssn = SSNS["robert"]
    await s.get(world.tokens["backend"], "Patient", identifier=f"{SSN}|{ssn}")
    await s.get(world.tokens["practitioner"], "Patient", _content=ssn)
    await world.app.state.audit.flush()
    col = world.app.state.ctx.store.db.audit
    texts = []
    async for d in col.find({"rt": "AuditEvent"}, {"res": 1}):
        for e in d["res"].get("entity", []):
            if "query" in e:
                texts.append(base64.b64decode(e["query"]).decode())
    assert any(ssn[-4:] in t and "us-ssn" in t for t in texts), "the SSN search was audited"
    for t in texts:
        _no_whole_ssn(t, "AuditEvent query")
    raw = orjson.dumps([d async for d in col.find({"rt": "AuditEvent"}, {"res": 1, "_id": 0})])
    _no_whole_ssn(raw.decode(), "AuditEvents")


async def test_match_is_filtered_by_the_callers_policy(world: World) -> None:
    """The sponsor matching someone outside the family gets nothing, as for no one."""
    robert = PEOPLE["robert"]
    given = {"resourceType": "Patient", "identifier": [{"system": EDIPI, "value": robert.edipi}]}
    r = await world.server.post(world.tokens["sponsor"], "Patient/$match", _match_body(given))
    assert r.status_code == 200 and r.json().get("entry", []) == []
    r = await world.server.post(world.tokens["backend"], "Patient/$match", _match_body(given))
    assert [e["resource"]["id"] for e in r.json()["entry"]] == [robert.id]
