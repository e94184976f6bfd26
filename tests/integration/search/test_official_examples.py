"""Searches on official R4 examples (tests/integration/search/examples/, CC0), with the
expected answers read off the example files by hand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from synthea import BASE_LU, to_doc

from fhir_server.search.execute import run_search
from fhir_server.search.indexes import index_models
from fhir_server.search.parse import parse_search

EXAMPLES = Path(__file__).parent / "examples"


@pytest.fixture(scope="module")
async def exdb(mongo_uri: str, registry: Any) -> Any:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri)
    database = client["search_examples"]
    await database["resources"].drop()
    await database["resources"].create_indexes(index_models())
    docs = [
        to_doc(json.loads(p.read_text()), registry, BASE_LU)
        for p in sorted(EXAMPLES.glob("*.json"))
    ]
    await database["resources"].insert_many(docs)
    yield database
    await client.close()


CASES = [
    # Observation-blood-pressure: systolic 107 mm[Hg], diastolic 60 mm[Hg].
    (
        "Observation",
        [("component-code-value-quantity", "http://loinc.org|8480-6$gt100")],
        {"blood-pressure"},
    ),
    ("Observation", [("component-code-value-quantity", "http://loinc.org|8480-6$lt100")], set()),
    ("Observation", [("component-value-quantity", "60||mm[Hg]")], {"blood-pressure"}),
    # Observation-example: body weight 185 [lb_av], effective 2016-03-28.
    ("Observation", [("value-quantity", "185|http://unitsofmeasure.org|[lb_av]")], {"example"}),
    ("Observation", [("date", "2016-03-28")], {"example"}),
    ("Observation", [("date", "2012-09-17")], {"blood-pressure"}),
    # Patient-example: Peter James Chalmers ("Jim"), born 1974-12-25, male.
    ("Patient", [("name", "jim")], {"example"}),
    ("Patient", [("given", "PETER"), ("family", "chalm")], {"example"}),
    ("Patient", [("birthdate", "1974-12")], {"example"}),
    ("Patient", [("birthdate", "gt1975")], set()),
    ("Patient", [("identifier", "urn:oid:1.2.36.146.595.217.0.1|12345")], {"example"}),
    ("Patient", [("address-city", "PleasantVille")], {"example"}),
    ("Patient", [("phone", "(03) 5555 6473")], {"example"}),
    ("Patient", [("_has:Observation:subject:code", "85354-9")], {"example"}),
    # Encounter-example: status in-progress, class IMP.
    (
        "Encounter",
        [
            ("status", "in-progress"),
            ("class", "http://terminology.hl7.org/CodeSystem/v3-ActCode|IMP"),
        ],
        {"example"},
    ),
]


@pytest.mark.parametrize(("rt", "params", "expected"), CASES)
async def test_official_examples(
    exdb: Any, registry: Any, rt: str, params: list[tuple[str, str]], expected: set[str]
) -> None:
    page = await run_search(exdb, registry, parse_search(rt, params, registry))
    assert {r["id"] for r in page.resources} == expected
