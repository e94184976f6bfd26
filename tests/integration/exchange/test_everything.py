"""`Patient/$everything` on the seed population and a Synthea bundle, with auth off.

Expected sets are computed from the Synthea bundle itself (its entries that reference the
patient, the Practitioners and Organizations those reference) or from declared seed facts,
never from the operation under test.
https://hl7.org/fhir/R4/patient-operation-everything.html
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import httpx
import orjson
import pytest

from fhir_server.exchange import everything as everything_module
from fhir_server.exchange.everything_params import parse_params
from fhir_server.search.execute import MAX_INCLUDES
from fhir_server.search.parse import MAX_COUNT
from tests.conftest import FHIR_JSON, SYNTHEA_DIR, make_settings, running_app
from tests.integration.seeded import restore_seed

BUNDLE = "Chet_Hoeger_5c6db3d0-c0fc-4eb7-8eae-dbc7847be741.json.gz"
SPONSOR = "sponsor-james-carter"
# R4 gives these types no care-date search parameter (Patient and RelatedPerson only have
# birthdate, Group none), so start/end never filter them out.
UNDATED = {"Patient", "Group", "RelatedPerson"}


@dataclass
class Synthea:
    patient: str  # "Patient/<id>" as stored
    compartment: set[str]  # every entry that references the patient, and the Patient
    referenced: set[str]  # Practitioners and Organizations the compartment refers to
    resources: dict[str, dict[str, Any]]  # stored ref -> the bundle's resource
    urls: dict[str, str]  # stored ref -> the bundle's fullUrl

    def refers(self, source: str, target: str) -> bool:
        """Whether the bundle's `source` entry references `target` (by its fullUrl)."""
        return self.urls[target] in orjson.dumps(self.resources[source]).decode()


@dataclass
class World:
    client: httpx.AsyncClient
    synthea: Synthea


def _load_bundle() -> dict[str, Any]:
    import gzip

    return dict(orjson.loads(gzip.decompress((SYNTHEA_DIR / BUNDLE).read_bytes())))


async def _post_synthea(client: httpx.AsyncClient) -> Synthea:
    bundle = _load_bundle()
    r = await client.post("", json=bundle, headers=FHIR_JSON, timeout=120)
    assert r.status_code == 200, r.text[:500]
    stored = {}
    for entry, answer in zip(bundle["entry"], r.json()["entry"], strict=True):
        loc = answer["response"]["location"].split("/_history")[0]
        stored[entry["fullUrl"]] = loc
    patient_url = next(
        e["fullUrl"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    texts = {e["fullUrl"]: orjson.dumps(e["resource"]).decode() for e in bundle["entry"]}
    compartment = {stored[u] for u, t in texts.items() if patient_url in t}
    compartment.add(stored[patient_url])
    referenced = {
        stored[e["fullUrl"]]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] in ("Practitioner", "Organization")
        and any(e["fullUrl"] in texts[u] for u in texts if stored[u] in compartment)
    }
    resources = {stored[e["fullUrl"]]: e["resource"] for e in bundle["entry"]}
    urls = {ref: url for url, ref in stored.items()}
    return Synthea(stored[patient_url], compartment, referenced, resources, urls)


@pytest.fixture(scope="module")
async def world(mongo_uri: str) -> AsyncIterator[World]:
    settings = make_settings(mongo_uri)
    await restore_seed(mongo_uri, settings.database, logins=False)
    async with running_app(settings) as client:
        yield World(client, await _post_synthea(client))


def refs(bundle: dict[str, Any], mode: str) -> list[str]:
    return [
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if e.get("search", {}).get("mode") == mode
    ]


def next_url(bundle: dict[str, Any]) -> str | None:
    return next((lk["url"] for lk in bundle["link"] if lk["relation"] == "next"), None)


async def pages(client: httpx.AsyncClient, url: str, **params: str) -> list[dict[str, Any]]:
    """Every page of an $everything answer, following `next` links."""
    # httpx replaces a URL's own query string with `params`, even an empty one.
    r = await client.get(url, params=params) if params else await client.get(url)
    assert r.status_code == 200, r.text[:500]
    out = [r.json()]
    while (link := next_url(out[-1])) is not None:
        assert len(out) < 200, "runaway paging"
        r = await client.get(link)
        assert r.status_code == 200, r.text[:500]
        out.append(r.json())
    return out


def all_matches(bundles: list[dict[str, Any]]) -> list[str]:
    return [ref for b in bundles for ref in refs(b, "match")]


# --- the record ----------------------------------------------------------------------------


async def test_patient_first_then_whole_compartment_and_references(world: World) -> None:
    s = world.synthea
    [b] = await pages(world.client, f"{s.patient}/$everything")
    assert b["resourceType"] == "Bundle" and b["type"] == "searchset"
    matches = refs(b, "match")
    assert matches[0] == s.patient
    assert len(matches) == len(set(matches)) == len(s.compartment) == 90
    assert set(matches) == s.compartment
    # The referenced Practitioner and Organization come along, as includes.
    assert set(refs(b, "include")) == s.referenced
    assert {r.split("/")[0] for r in s.referenced} == {"Practitioner", "Organization"}
    assert b["link"][0] == {
        "relation": "self",
        "url": f"http://127.0.0.1:8080/fhir/{s.patient}/$everything",
    }
    full = {e["fullUrl"] for e in b["entry"]}
    assert f"http://127.0.0.1:8080/fhir/{s.patient}" in full


async def test_seed_sponsor_record_and_references(world: World) -> None:
    [b] = await pages(world.client, f"Patient/{SPONSOR}/$everything")
    matches = refs(b, "match")
    assert matches[0] == f"Patient/{SPONSOR}"
    # Declared seed facts (seed_data/README.md): his lab report, a refill-able prescription,
    # his care team; his PCM and his clinic are outside the compartment and referenced.
    for ref in (
        "DiagnosticReport/dr-james-lipid-panel",
        "MedicationRequest/medrx-james-lisinopril",
        "CareTeam/careteam-james-carter",
        "Appointment/appt-james-lipid-followup",
    ):
        assert ref in matches
    included = refs(b, "include")
    assert "Practitioner/pcm-rachel-kim" in included
    assert "Organization/lakeside-family-medicine" in included
    # Nothing of another patient: the sponsor's children are in their own compartments.
    assert "Observation/obs-liam-peanut-ige" not in matches + included
    assert "Patient/child-liam-carter" not in matches + included


async def test_paging_gives_each_resource_once(world: World) -> None:
    s = world.synthea
    bundles = await pages(world.client, f"{s.patient}/$everything", _count="7")
    matches = all_matches(bundles)
    assert len(bundles) == math.ceil(90 / 7)
    assert all(len(refs(b, "match")) <= 7 for b in bundles)
    assert Counter(matches) == Counter(s.compartment)
    assert matches[0] == s.patient and matches.count(s.patient) == 1
    # Every page's includes are outside the compartment.
    assert {r for b in bundles for r in refs(b, "include")} == s.referenced
    # The next link keeps the parameters and a cursor.
    link = next_url(bundles[0])
    assert link is not None and "_count=7" in link and "_cursor=" in link


async def test_paging_stays_right_while_data_changes(world: World) -> None:
    client = world.client
    pid = "everything-paging-pat"
    r = await client.put(
        f"Patient/{pid}", json={"resourceType": "Patient", "id": pid}, headers=FHIR_JSON
    )
    assert r.status_code == 201
    for i in range(12):
        r = await client.put(
            f"Observation/ev-{i:02d}",
            json={
                "resourceType": "Observation",
                "id": f"ev-{i:02d}",
                "status": "final",
                "code": {"text": "probe"},
                "subject": {"reference": f"Patient/{pid}"},
            },
            headers=FHIR_JSON,
        )
        assert r.status_code == 201
    first = (await client.get(f"Patient/{pid}/$everything", params={"_count": "5"})).json()
    seen = refs(first, "match")
    assert seen == [f"Patient/{pid}"] + [f"Observation/ev-{i:02d}" for i in range(4)]
    # Between pages: one not yet seen is deleted, one is added before the cursor and one after.
    assert (await client.delete("Observation/ev-07")).status_code == 204
    for new in ("ev-00a", "ev-99"):
        body = {
            "resourceType": "Observation",
            "id": new,
            "status": "final",
            "code": {"text": "probe"},
            "subject": {"reference": f"Patient/{pid}"},
        }
        assert (await client.put(f"Observation/{new}", json=body, headers=FHIR_JSON)).is_success
    link = next_url(first)
    while link is not None:
        page = (await client.get(link)).json()
        seen += refs(page, "match")
        link = next_url(page)
    expected = [f"Observation/ev-{i:02d}" for i in range(12) if i != 7] + ["Observation/ev-99"]
    assert seen == [f"Patient/{pid}"] + expected


async def test_includes_are_bounded_per_page(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    # The bound is search's include cap; lowered here so the test needs a handful of
    # Practitioners rather than a thousand.
    assert everything_module.MAX_INCLUDES == MAX_INCLUDES == 1000
    bound = 5
    monkeypatch.setattr(everything_module, "MAX_INCLUDES", bound)
    client = world.client
    pid = "everything-many-refs"
    n = bound + 3
    entries: list[dict[str, Any]] = [
        {
            "resource": {"resourceType": "Practitioner", "id": f"ev-prac-{i:04d}"},
            "request": {"method": "PUT", "url": f"Practitioner/ev-prac-{i:04d}"},
        }
        for i in range(n)
    ]
    entries.append(
        {
            "resource": {"resourceType": "Patient", "id": pid},
            "request": {"method": "PUT", "url": f"Patient/{pid}"},
        }
    )
    entries.append(
        {
            "resource": {
                "resourceType": "Observation",
                "id": "ev-many-performers",
                "status": "final",
                "code": {"text": "probe"},
                "subject": {"reference": f"Patient/{pid}"},
                "performer": [{"reference": f"Practitioner/ev-prac-{i:04d}"} for i in range(n)],
            },
            "request": {"method": "PUT", "url": "Observation/ev-many-performers"},
        }
    )
    tx = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    r = await client.post("", json=tx, headers=FHIR_JSON, timeout=300)
    assert r.status_code == 200, r.text[:300]
    [b] = await pages(client, f"Patient/{pid}/$everything")
    assert refs(b, "match") == [f"Patient/{pid}", "Observation/ev-many-performers"]
    included = refs(b, "include")
    assert len(included) == len(set(included)) == bound
    assert set(included) <= {f"Practitioner/ev-prac-{i:04d}" for i in range(n)}
    [outcome] = [e["resource"] for e in b["entry"] if e["search"]["mode"] == "outcome"]
    assert outcome["issue"][0]["code"] == "too-costly"
    assert f"capped at {bound}" in outcome["issue"][0]["diagnostics"]


# --- parameters ----------------------------------------------------------------------------


async def test_type_restricts_matches_and_includes(world: World) -> None:
    s = world.synthea
    [b] = await pages(world.client, f"{s.patient}/$everything", _type="Encounter,Practitioner")
    encounters = {r for r in s.compartment if r.startswith("Encounter/")}
    assert len(encounters) == 7
    assert set(refs(b, "match")) == encounters
    # The Practitioners the Encounters name; not their Organizations (not asked for).
    practitioners = {
        r
        for r in s.referenced
        if r.startswith("Practitioner/") and any(s.refers(e, r) for e in encounters)
    }
    assert practitioners
    assert set(refs(b, "include")) == practitioners
    # Repeated _type parameters add up; Patient listed keeps the Patient first.
    url = f"{s.patient}/$everything?_type=Patient&_type=Condition"
    [b] = await pages(world.client, url)
    conditions = {r for r in s.compartment if r.startswith("Condition/")}
    assert refs(b, "match")[0] == s.patient
    assert set(refs(b, "match")) == conditions | {s.patient}
    assert refs(b, "include") == []


async def test_since_keeps_what_changed_after_it(world: World) -> None:
    s = world.synthea
    client = world.client
    target = sorted(r for r in s.compartment if r.startswith("Immunization/"))[0]
    current = (await client.get(target)).json()
    current["status"] = "not-done" if current["status"] != "not-done" else "completed"
    r = await client.put(target, json=current, headers=FHIR_JSON)
    assert r.status_code == 200
    since = r.json()["meta"]["lastUpdated"]
    [b] = await pages(client, f"{s.patient}/$everything", _since=since)
    # The Patient always leads the record; of the rest only the update is newer.
    assert refs(b, "match") == [s.patient, target]
    [b] = await pages(client, f"{s.patient}/$everything", _since="2000-01-01T00:00:00Z")
    assert set(refs(b, "match")) == s.compartment


def _utc_day(text: str) -> date:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC).date()


async def test_start_end_restrict_care_dates(world: World) -> None:
    s = world.synthea
    encounters = sorted(
        (_utc_day(res["period"]["start"]), ref)
        for ref, res in s.resources.items()
        if res["resourceType"] == "Encounter"
    )
    start, end = encounters[2][0], encounters[4][0]
    expected = {s.patient}
    for ref, res in s.resources.items():
        if res["resourceType"] == "Observation":
            if start <= _utc_day(res["effectiveDateTime"]) <= end:
                expected.add(ref)
        elif res["resourceType"] == "Encounter":
            p = res["period"]
            if _utc_day(p["end"]) >= start and _utc_day(p["start"]) <= end:
                expected.add(ref)
    assert 3 < len(expected) < 60  # a real restriction, not all or nothing
    [b] = await pages(
        world.client,
        f"{s.patient}/$everything",
        start=start.isoformat(),
        end=end.isoformat(),
        _type="Patient,Observation,Encounter",
    )
    assert set(refs(b, "match")) == expected


async def test_undated_types_survive_a_date_range(world: World) -> None:
    [everything] = await pages(world.client, f"Patient/{SPONSOR}/$everything")
    undated = {r for r in refs(everything, "match") if r.split("/")[0] in UNDATED}
    assert {r.split("/")[0] for r in undated} == UNDATED  # the sponsor has all three
    [b] = await pages(world.client, f"Patient/{SPONSOR}/$everything", end="1900-01-01")
    assert set(refs(b, "match")) == undated


async def test_post_with_parameters_equals_get(world: World) -> None:
    s = world.synthea
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "_type", "valueCode": "Condition,Encounter"},
            {"name": "_count", "valueInteger": 5},
        ],
    }
    r = await world.client.post(f"{s.patient}/$everything", json=body, headers=FHIR_JSON)
    assert r.status_code == 200, r.text
    posted = r.json()
    got = (
        await world.client.get(
            f"{s.patient}/$everything", params={"_type": "Condition,Encounter", "_count": "5"}
        )
    ).json()
    assert refs(posted, "match") == refs(got, "match") and len(refs(got, "match")) == 5
    # Its next link is a GET that carries the parameters.
    link = next_url(posted)
    assert link is not None and "_type=Condition%2CEncounter" in link
    r = await world.client.post(
        f"{s.patient}/$everything", json={"resourceType": "Patient"}, headers=FHIR_JSON
    )
    assert r.status_code == 400
    # The one parameter parser answers every operation's non-Parameters body alike
    # (fhir_server/operations/params.py; $export's test asks the same).
    assert r.json()["issue"][0]["code"] == "invalid"


# --- errors --------------------------------------------------------------------------------


async def test_missing_patient_answers_like_a_missing_read(world: World) -> None:
    r = await world.client.get("Patient/no-such-patient/$everything")
    m = await world.client.get("Patient/no-such-patient")
    assert r.status_code == m.status_code == 404
    assert r.json() == m.json()
    assert r.headers["content-type"].startswith("application/fhir+json")


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"foo": "1"}, "invalid"),
        ({"_type": "Observation,NotAType"}, "invalid"),
        ({"start": "yesterday"}, "invalid"),
        ({"_since": "2020-13-45"}, "invalid"),
        ({"_count": "many"}, "invalid"),
        ({"_count": "0"}, "invalid"),
        ({"start": "2020-02-01", "end": "2020-01-01"}, "invalid"),
        ({"_cursor": "not-a-cursor"}, "invalid"),
        ({"_sort": "date"}, "invalid"),
    ],
)
async def test_bad_parameters_answer_400(world: World, params: dict[str, str], code: str) -> None:
    for url in (f"Patient/{SPONSOR}/$everything", "Patient/$everything"):
        r = await world.client.get(url, params=params)
        assert r.status_code == 400, r.text
        body = r.json()
        assert body["resourceType"] == "OperationOutcome"
        assert [i["code"] for i in body["issue"]] == [code]


async def test_a_parameter_twice_is_400(world: World) -> None:
    r = await world.client.get(f"Patient/{SPONSOR}/$everything?start=2020&start=2021")
    assert r.status_code == 400 and "only once" in r.text


async def test_lenient_handling_drops_bad_parameters_with_a_warning(world: World) -> None:
    r = await world.client.get(
        f"Patient/{SPONSOR}/$everything",
        params={"foo": "1", "_type": "Patient"},
        headers={"Prefer": "handling=lenient"},
    )
    assert r.status_code == 200, r.text
    b = r.json()
    assert refs(b, "match") == [f"Patient/{SPONSOR}"]
    outcome = [e["resource"] for e in b["entry"] if e["search"]["mode"] == "outcome"]
    assert len(outcome) == 1 and "'foo'" in outcome[0]["issue"][0]["diagnostics"]
    assert "foo" not in b["link"][0]["url"] and "_type=Patient" in b["link"][0]["url"]


async def test_other_methods_are_405(world: World) -> None:
    r = await world.client.delete(f"Patient/{SPONSOR}/$everything")
    assert r.status_code == 405
    assert r.json()["issue"][0]["code"] == "not-supported"


def test_count_is_capped_by_the_search_maximum() -> None:
    assert parse_params([("_count", "5000")], {"Patient"}, strict=True).count == MAX_COUNT == 1000
    assert parse_params([], {"Patient"}, strict=True).count == MAX_COUNT
    assert parse_params([("_count", "3")], {"Patient"}, strict=True).count == 3


# --- type level ----------------------------------------------------------------------------


async def test_type_level_lists_every_patient_then_their_records_once(world: World) -> None:
    s = world.synthea
    bundles = await pages(world.client, "Patient/$everything", _count="100")
    matches = all_matches(bundles)
    assert len(matches) == len(set(matches))
    patients = [r for r in matches if r.startswith("Patient/")]
    # The Patients lead, all of them (searched independently).
    assert matches[: len(patients)] == patients
    listed = (await world.client.get("Patient", params={"_count": "1000"})).json()
    assert set(patients) == set(refs(listed, "match"))
    assert s.compartment <= set(matches)
    assert "Observation/obs-liam-peanut-ige" in matches
    included = {r for b in bundles for r in refs(b, "include")}
    assert s.referenced <= included
    assert not included & set(matches)


async def test_capability_statement_lists_the_operation(world: World) -> None:
    cs = (await world.client.get("metadata")).json()
    [patient] = [r for r in cs["rest"][0]["resource"] if r["type"] == "Patient"]
    assert {
        "name": "everything",
        "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
    } in patient["operation"]
