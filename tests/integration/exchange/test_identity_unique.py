"""Unique identifiers (profiles/exchange/identifiers.json): a second Patient with the same
EDIPI is 409 naming the first, on create, update, patch and in a transaction bundle, and
of Patients created at once with one EDIPI exactly one is stored. Aliases: the MHS EDIPI
URI is the DoD OID's alias, for uniqueness and search alike. A merge (a transaction bundle:
docs/exchange.md, "Merging two Patients") keeps both histories; `$ihe-pix` follows the
links."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

from tests.conftest import FHIR_JSON, make_settings, running_app

OID = "urn:oid:2.16.840.1.113883.3.42.10001.100001.12"
MHS = "http://mhs.example.org/fhir/sid/edipi"
ICN = "urn:oid:2.16.840.1.113883.4.349"
MRN = "https://va.example.org/fhir/sid/mrn"
SSN = "http://hl7.org/fhir/sid/us-ssn"


@pytest.fixture(scope="module")
async def client(mongo_uri: str) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(make_settings(mongo_uri)) as c:
        yield c


def _patient(*idents: tuple[str, str], **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": s, "value": v} for s, v in idents],
        "name": [{"family": "Unique", "given": ["Test"]}],
        **extra,
    }


async def _create(client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    return await client.post("Patient", json=body, headers=FHIR_JSON)


async def _count(client: httpx.AsyncClient, token: str) -> int:
    r = await client.get("Patient", params={"identifier": token, "_total": "accurate"})
    assert r.status_code == 200, r.text
    return len(r.json().get("entry", []))


async def test_second_create_with_the_same_edipi_is_409_naming_the_first(
    client: httpx.AsyncClient,
) -> None:
    first = await _create(client, _patient((OID, "3000000001")))
    assert first.status_code == 201, first.text
    first_id = first.json()["id"]
    # The alias system names the same EDIPI.
    second = await _create(client, _patient((MHS, "3000000001")))
    assert second.status_code == 409, second.text
    issue = second.json()["issue"][0]
    assert issue["code"] == "conflict" and f"Patient/{first_id}" in issue["diagnostics"]
    assert await _count(client, f"{OID}|3000000001") == 1
    assert await _count(client, f"{MHS}|3000000001") == 1  # the alias finds it too


async def test_update_and_patch_that_add_a_taken_edipi_are_409(client: httpx.AsyncClient) -> None:
    a = await _create(client, _patient((OID, "3000000002")))
    b = await _create(client, _patient((MRN, "B-0002")))
    assert a.status_code == b.status_code == 201
    b_body = b.json()
    b_body["identifier"].append({"system": OID, "value": "3000000002"})
    r = await client.put(f"Patient/{b_body['id']}", json=b_body, headers=FHIR_JSON)
    assert r.status_code == 409 and a.json()["id"] in r.text
    ops = [{"op": "add", "path": "/identifier/-", "value": {"system": OID, "value": "3000000002"}}]
    r = await client.patch(
        f"Patient/{b_body['id']}", json=ops, headers={"Content-Type": "application/json-patch+json"}
    )
    assert r.status_code == 409, r.text
    r = await client.get(f"Patient/{b_body['id']}")
    assert r.json()["meta"]["versionId"] == "1"  # nothing was written
    # Its own EDIPI on an update of the holder is fine; dropping it frees it.
    a_body = a.json()
    a_body["identifier"] = [{"system": MRN, "value": "A-0002"}]
    r = await client.put(f"Patient/{a_body['id']}", json=a_body, headers=FHIR_JSON)
    assert r.status_code == 200, r.text
    r = await client.put(f"Patient/{b_body['id']}", json=b_body, headers=FHIR_JSON)
    assert r.status_code == 200, r.text


async def test_a_transaction_bundle_with_two_patients_sharing_an_edipi_writes_nothing(
    client: httpx.AsyncClient,
) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": _patient((OID, "3000000003")),
                "request": {"method": "POST", "url": "Patient"},
            }
            for _ in range(2)
        ],
    }
    r = await client.post("", json=bundle, headers=FHIR_JSON)
    assert r.status_code == 409, r.text
    assert await _count(client, f"{OID}|3000000003") == 0


async def test_parallel_creates_with_one_edipi_store_exactly_one(client: httpx.AsyncClient) -> None:
    statuses: list[int] = []
    bodies: list[str] = []

    async def one() -> None:
        r = await _create(client, _patient((OID, "3000000004")))
        statuses.append(r.status_code)
        bodies.append(r.text)

    async with anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(one)
    assert statuses.count(201) == 1, statuses
    # The losers: 409 (the claim held), or 412 "retry" when the database reports the
    # conflict at commit; never a second Patient.
    assert set(statuses) - {201} <= {409, 412}, bodies
    assert await _count(client, f"{OID}|3000000004") == 1
    # A loser retried meets the winner's claim: 409 naming it.
    winner = next(b for st, b in zip(statuses, bodies, strict=True) if st == 201)
    again = await _create(client, _patient((OID, "3000000004")))
    assert again.status_code == 409 and httpx.Response(201, text=winner).json()["id"] in again.text


async def test_a_deleted_holder_frees_its_edipi(client: httpx.AsyncClient) -> None:
    a = await _create(client, _patient((OID, "3000000005")))
    assert a.status_code == 201
    assert (await client.delete(f"Patient/{a.json()['id']}")).status_code == 204
    b = await _create(client, _patient((OID, "3000000005")))
    assert b.status_code == 201, b.text


async def test_merge_keeps_both_histories_and_the_crosswalk_follows_the_link(
    client: httpx.AsyncClient,
) -> None:
    old = await _create(client, _patient((OID, "3000000006"), (MRN, "VA-77")))
    new = await _create(client, _patient((ICN, "1000000006V000006"), (SSN, "900000006")))
    assert old.status_code == new.status_code == 201
    o, n = old.json(), new.json()
    # The merge: the old record replaced by the new (inactive), the new one `replaces` it
    # and takes its EDIPI, in one transaction.
    o_after = {
        **o,
        "active": False,
        "link": [{"other": {"reference": f"Patient/{n['id']}"}, "type": "replaced-by"}],
    }
    n_after = {
        **n,
        "identifier": [*n["identifier"], {"use": "old", "system": OID, "value": "3000000006"}],
        "link": [{"other": {"reference": f"Patient/{o['id']}"}, "type": "replaces"}],
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": o_after, "request": {"method": "PUT", "url": f"Patient/{o['id']}"}},
            {"resource": n_after, "request": {"method": "PUT", "url": f"Patient/{n['id']}"}},
        ],
    }
    r = await client.post("", json=bundle, headers=FHIR_JSON)
    assert r.status_code == 200, r.text
    for rid in (o["id"], n["id"]):
        h = await client.get(f"Patient/{rid}/_history")
        assert len(h.json()["entry"]) == 2, rid
    # The EDIPI is the survivor's now; a third Patient still cannot take it.
    third = await _create(client, _patient((OID, "3000000006")))
    assert third.status_code == 409 and n["id"] in third.text
    # From the old MRN, every identifier of the person, through the replaced-by link.
    r = await client.get("Patient/$ihe-pix", params={"sourceIdentifier": f"{MRN}|VA-77"})
    assert r.status_code == 200, r.text
    params = r.json()["parameter"]
    idents = {
        (p["valueIdentifier"]["system"], p["valueIdentifier"]["value"])
        for p in params
        if p["name"] == "targetIdentifier"
    }
    assert {(ICN, "1000000006V000006"), (SSN, "900000006"), (OID, "3000000006")} <= idents
    assert (MRN, "VA-77") not in idents  # the source itself is not echoed
    ids = {p["valueReference"]["reference"] for p in params if p["name"] == "targetId"}
    assert ids == {f"Patient/{o['id']}", f"Patient/{n['id']}"}
    r = await client.get(
        "Patient/$ihe-pix", params={"sourceIdentifier": f"{MRN}|VA-77", "targetSystem": ICN}
    )
    assert [
        p["valueIdentifier"]["value"]
        for p in r.json()["parameter"]
        if p["name"] == "targetIdentifier"
    ] == ["1000000006V000006"]


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"sourceIdentifier": "urn:example:unknown|1"}, 400),
        ({"sourceIdentifier": f"{MRN}|no-such"}, 404),
        ({"sourceIdentifier": f"{OID}|3000000006", "targetSystem": "urn:example:x"}, 403),
        ({"sourceIdentifier": "no-bar"}, 400),
    ],
)
async def test_ihe_pix_refusals(
    client: httpx.AsyncClient, params: dict[str, str], status: int
) -> None:
    r = await client.get("Patient/$ihe-pix", params=params)
    assert r.status_code == status, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
