"""Client compatibility (issue 16, developer experience item 6): popular clients' habits work
or fail clearly. Medplum's client POSTs `$export` with an empty body; a POST to a type with
search parameters in its query string is a mistaken search and must not create anything."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conftest import make_settings, running_app

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
FHIR = "application/fhir+json"


@pytest.fixture(scope="module")
async def http(mongo_uri: str) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(make_settings(mongo_uri)) as client:
        yield client


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": FHIR},  # Medplum: JSON content type, no body
        {"Content-Type": "application/json"},
        {},  # no content type either
    ],
)
async def test_an_empty_post_body_on_export_is_no_parameters(
    http: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    answer = await http.post("$export", headers={**ASYNC, **headers}, content=b"")
    assert answer.status_code == 202, answer.text
    # The job runs as a parameterless GET's would; cancelled, so the next kick-off has room.
    cancel = await http.delete(answer.headers["content-location"])
    assert cancel.status_code == 202, cancel.text
    patient_level = await http.post("Patient/$export", headers={**ASYNC, **headers}, content=b"")
    assert patient_level.status_code == 202, patient_level.text
    assert (await http.delete(patient_level.headers["content-location"])).status_code == 202


async def test_a_post_with_search_parameters_in_the_query_is_refused_and_creates_nothing(
    http: httpx.AsyncClient,
) -> None:
    family = "Zzcompat"
    body = {"resourceType": "Patient", "name": [{"family": family}]}
    answer = await http.post(f"Patient?family={family}", json=body, headers={"Content-Type": FHIR})
    assert answer.status_code == 400, answer.text
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "family" in outcome["issue"][0]["diagnostics"]
    assert "_search" in outcome["issue"][0]["diagnostics"]
    found = await http.get("Patient", params={"family": family})
    assert found.json().get("total", len(found.json().get("entry", []))) == 0
    assert not found.json().get("entry")
    # The general parameters a create may carry still work.
    made = await http.post("Patient?_pretty=true", json=body, headers={"Content-Type": FHIR})
    assert made.status_code == 201, made.text
