"""Patient/$match against a table of cases written from the identity-matching rules
(HL7 Identity Matching IG, IHE PDQm): exact, typo, twin, married name, missing SSN, the
account-linking input. The oracle is the table itself: each expected sum was worked out by
hand from profiles/exchange/matching.json and identifiers.json (the comment on each row
shows the sum), not by the code under test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.conftest import FHIR_JSON, make_settings, running_app

EDIPI = "urn:oid:2.16.840.1.113883.3.42.10001.100001.12"
SSN = "http://hl7.org/fhir/sid/us-ssn"
GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"
SCALE = 24  # matching.json score_scale

ADDRESS = [{"line": ["10 Elm St"], "city": "Lakeside", "state": "VA", "postalCode": "23461"}]
PHONE = [{"system": "phone", "value": "757-555-0101"}]
KATHERINE: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "match-katherine",
    "identifier": [
        {"system": EDIPI, "value": "2000000001"},
        {"system": SSN, "value": "900112233"},
    ],
    "name": [{"family": "Whitfield", "given": ["Katherine", "Anne"]}],
    "gender": "female",
    "birthDate": "1985-03-14",
    "address": ADDRESS,
    "telecom": PHONE,
}
CAROLINE: dict[str, Any] = {  # Katherine's twin
    **KATHERINE,
    "id": "match-caroline",
    "identifier": [
        {"system": EDIPI, "value": "2000000002"},
        {"system": SSN, "value": "900112244"},
    ],
    "name": [{"family": "Whitfield", "given": ["Caroline"]}],
}
MARIA: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "match-maria",
    "identifier": [
        {"system": EDIPI, "value": "2000000003"},
        {"system": SSN, "value": "900556677"},
    ],
    "name": [{"family": "Gonzalez", "given": ["Maria"]}],
    "gender": "female",
    "birthDate": "1990-07-02",
    "address": [{"line": ["5 Pine Rd"], "postalCode": "23461"}],
}


def _strip(p: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in p.items() if k not in (*keys, "id")}


# (case, input Patient, {candidate id: (hand-computed sum, grade)}; an id absent from the
# dict must not be returned). Weights: edipi +14/-14, ssn +10/-10 (last four +6/-8),
# family exact 4 / phonetic 3 / other -2, given exact 3 / phonetic 2 / other -2,
# birthDate exact 5 / other -5, gender 1 / -3, address line+postal 2, telecom 2.
CASES: list[tuple[str, dict[str, Any], dict[str, tuple[int, str]]]] = [
    (
        "exact",
        _strip(KATHERINE),
        # 14 + 10 + 4 + 3 + 5 + 1 + 2 + 2; the twin: -14 - 10 + 4 - 2 + 5 + 1 + 2 + 2 = -12
        {"match-katherine": (41, "certain")},
    ),
    (
        "typo",
        {
            "resourceType": "Patient",
            "name": [{"family": "Whitfeld", "given": ["Katherin"]}],
            "gender": "female",
            "birthDate": "1985-03-14",
            "telecom": PHONE,
        },
        # 3 + 2 + 5 + 1 + 2 = 13; the twin: 3 - 2 + 5 + 1 + 2 = 9
        {"match-katherine": (13, "probable"), "match-caroline": (9, "possible")},
    ),
    (
        "twin",
        _strip(CAROLINE),
        # 14 + 10 + 4 + 3 + 5 + 1 + 2 + 2 = 41; Katherine: -12, not returned
        {"match-caroline": (41, "certain")},
    ),
    (
        "married name",
        {
            "resourceType": "Patient",
            "identifier": [{"system": SSN, "value": "900556677"}],
            "name": [{"family": "Reyes", "given": ["Maria"]}],
            "gender": "female",
            "birthDate": "1990-07-02",
            "address": [{"line": ["22 Oak Ave"], "postalCode": "23462"}],
        },
        # 10 - 2 + 3 + 5 + 1 + 0 (address disagrees: weight 0) = 17
        {"match-maria": (17, "probable")},
    ),
    (
        "missing SSN",
        _strip(KATHERINE, "identifier"),
        # 4 + 3 + 5 + 1 + 2 + 2 = 17; the twin: 4 - 2 + 5 + 1 + 2 + 2 = 12
        {"match-katherine": (17, "probable"), "match-caroline": (12, "probable")},
    ),
    (
        "account linking: name, birth date, last four of the SSN",
        {
            "resourceType": "Patient",
            "name": [{"text": "Katherine Whitfield"}],
            "birthDate": "1985-03-14",
            "identifier": [{"system": SSN, "value": "2233"}],
        },
        # 6 + 4 + 3 + 5 = 18; the twin: -8 + 4 - 2 + 5 = -1
        {"match-katherine": (18, "certain")},
    ),
    (
        "accents and case do not matter",
        {
            "resourceType": "Patient",
            "name": [{"family": "WHİTFİELD".replace("İ", "I"), "given": ["Kathérine"]}],
            "birthDate": "1985-03-14",
        },
        # 4 + 3 + 5 = 12; the twin: 4 - 2 + 5 = 7
        {"match-katherine": (12, "probable"), "match-caroline": (7, "possible")},
    ),
]


@pytest.fixture(scope="module")
async def client(mongo_uri: str) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(make_settings(mongo_uri)) as c:
        for p in (KATHERINE, CAROLINE, MARIA):
            r = await c.put(f"Patient/{p['id']}", json=p, headers=FHIR_JSON)
            assert r.status_code in (200, 201), r.text
        yield c


def _match(resource: dict[str, Any], **extra: Any) -> dict[str, Any]:
    params = [{"name": "resource", "resource": resource}]
    for name, value in extra.items():
        key = "valueBoolean" if isinstance(value, bool) else "valueInteger"
        params.append({"name": name, key: value})
    return {"resourceType": "Parameters", "parameter": params}


async def _run(client: httpx.AsyncClient, resource: dict[str, Any], **extra: Any) -> httpx.Response:
    return await client.post("Patient/$match", json=_match(resource, **extra), headers=FHIR_JSON)


@pytest.mark.parametrize(("case", "given", "expected"), CASES, ids=[c[0] for c in CASES])
async def test_match_cases(
    client: httpx.AsyncClient,
    case: str,
    given: dict[str, Any],
    expected: dict[str, tuple[int, str]],
) -> None:
    r = await _run(client, given)
    assert r.status_code == 200, r.text
    bundle = r.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    got = {
        e["resource"]["id"]: (e["search"]["score"], e["search"]["extension"][0])
        for e in bundle.get("entry", [])
        if e["resource"]["id"].startswith("match-")
    }
    assert set(got) == set(expected), (case, got)
    for rid, (total, grade) in expected.items():
        score, ext = got[rid]
        assert ext == {"url": GRADE, "valueCode": grade}, (case, rid)
        assert score == pytest.approx(min(1.0, max(0.0, total / SCALE)), abs=1e-4), (case, rid)
    scores = [e["search"]["score"] for e in bundle["entry"]]
    assert scores == sorted(scores, reverse=True), "best first"


async def test_only_certain_matches_and_count(client: httpx.AsyncClient) -> None:
    r = await _run(client, _strip(KATHERINE, "identifier"), onlyCertainMatches=True)
    assert r.status_code == 200 and r.json().get("entry", []) == []  # two probable: none
    r = await _run(client, _strip(KATHERINE), onlyCertainMatches=True)
    assert [e["resource"]["id"] for e in r.json()["entry"]] == ["match-katherine"]
    r = await _run(client, _strip(KATHERINE, "identifier"), count=1)
    assert [e["resource"]["id"] for e in r.json()["entry"]] == ["match-katherine"]


@pytest.mark.parametrize(
    ("given", "missing"),
    [
        ({"resourceType": "Patient", "name": [{"family": "Whitfield"}]}, "birthDate"),
        ({"resourceType": "Patient", "birthDate": "1985-03-14"}, "name.family"),
        ({"resourceType": "Patient", "gender": "female"}, "identifier"),
    ],
)
async def test_too_little_input_is_422_naming_what_is_missing(
    client: httpx.AsyncClient, given: dict[str, Any], missing: str
) -> None:
    r = await _run(client, given)
    assert r.status_code == 422, r.text
    issue = r.json()["issue"][0]
    assert issue["code"] == "required"
    assert missing in issue["diagnostics"]


async def test_not_a_patient_is_400(client: httpx.AsyncClient) -> None:
    r = await _run(client, {"resourceType": "Observation"})
    assert r.status_code == 400 and r.json()["resourceType"] == "OperationOutcome"
