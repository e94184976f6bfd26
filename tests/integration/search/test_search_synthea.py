"""Search results on the Synthea data, checked against answers computed from the raw JSON
with plain Python (no code under test in the expectations)."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from fhir_server.errors import BadRequest, NotSupported
from fhir_server.search.bundle import searchset_bundle
from fhir_server.search.execute import count, find_matches, run_search
from fhir_server.search.parse import parse_search

R = dict[str, Any]


def fold(s: str) -> str:
    return "".join(
        c for c in unicodedata.normalize("NFKD", s) if not unicodedata.combining(c)
    ).casefold()


def utc(s: str) -> datetime:
    d = datetime.fromisoformat(s)
    return d.astimezone(UTC) if d.tzinfo else d.replace(tzinfo=UTC)


def codes(cc: Any) -> list[tuple[str | None, str]]:
    return [(c.get("system"), c.get("code")) for c in (cc or {}).get("coding", [])]


def ref_id(r: R, key: str) -> str | None:
    return (r.get(key) or {}).get("reference")


async def all_ids(
    db: Any, registry: Any, rt: str | None, params: list[tuple[str, str]], **kw: Any
) -> list[str]:
    out: list[str] = []
    cursor = None
    for _ in range(1000):
        p = params + ([("_cursor", cursor)] if cursor else [])
        page = await run_search(db, registry, parse_search(rt, p, registry), **kw)
        out += [f"{r['resourceType']}/{r['id']}" for r in page.resources]
        cursor = page.next_cursor
        if not cursor:
            break
    return out


def of(synthea: list[R], rt: str, pred: Callable[[R], bool]) -> set[str]:
    return {f"{rt}/{r['id']}" for r in synthea if r["resourceType"] == rt and pred(r)}


PID = "018f428e-34f6-4707-8009-5ad742f901e7"  # Abdul Koepp (identifier e925b0f3-...)
EMPTY_OK = {"string :exact wrong case", "uri"}


def first_patient(synthea: list[R]) -> R:
    return next(r for r in synthea if r["resourceType"] == "Patient")


CASES: list[tuple[str, str, list[tuple[str, str]], Callable[[R], bool]]] = [
    (
        "token system|code",
        "Observation",
        [("code", "http://loinc.org|8302-2")],
        lambda r: ("http://loinc.org", "8302-2") in codes(r["code"]),
    ),
    (
        "token OR",
        "Observation",
        [("code", "8302-2,29463-7")],
        lambda r: any(c in ("8302-2", "29463-7") for _, c in codes(r["code"])),
    ),
    (
        "token :not",
        "Observation",
        [("status", "final"), ("code:not", "8302-2")],
        lambda r: r["status"] == "final" and "8302-2" not in [c for _, c in codes(r["code"])],
    ),
    (
        "token :text",
        "Observation",
        [("code:text", "BODY")],
        lambda r: any(
            fold(t).startswith("body")
            for t in [r["code"].get("text", "")]
            + [c.get("display", "") for c in r["code"]["coding"]]
        ),
    ),
    ("token gender", "Patient", [("gender", "female")], lambda r: r.get("gender") == "female"),
    (
        "token identifier",
        "Patient",
        [("identifier", "http://hospital.smarthealthit.org|e925b0f3-8006-43f6-aa31-94bd215e55e7")],
        lambda r: any(
            i.get("system") == "http://hospital.smarthealthit.org"
            and i.get("value") == "e925b0f3-8006-43f6-aa31-94bd215e55e7"
            for i in r.get("identifier", [])
        ),
    ),
    (
        "string prefix",
        "Patient",
        [("family", "ko")],
        lambda r: any(fold(n.get("family", "")).startswith("ko") for n in r["name"]),
    ),
    (
        "string :exact",
        "Patient",
        [("family:exact", "Koepp")],
        lambda r: any(n.get("family") == "Koepp" for n in r["name"]),
    ),
    (
        "string :exact wrong case",
        "Patient",
        [("family:exact", "koepp")],
        lambda r: any(n.get("family") == "koepp" for n in r["name"]),
    ),
    (
        "string :contains",
        "Patient",
        [("name:contains", "EPP")],
        lambda r: any(
            "epp" in fold(p)
            for n in r["name"]
            for p in [n.get("family", "")] + n.get("given", []) + n.get("prefix", [])
        ),
    ),
    (
        "date ge",
        "Observation",
        [("date", "ge2015-01-01")],
        lambda r: utc(r["effectiveDateTime"]) >= datetime(2015, 1, 1, tzinfo=UTC),
    ),
    (
        "date lt",
        "Observation",
        [("date", "lt2012-06-01")],
        lambda r: utc(r["effectiveDateTime"]) < datetime(2012, 6, 1, tzinfo=UTC),
    ),
    (
        "date eq year",
        "Observation",
        [("date", "2015")],
        lambda r: utc(r["effectiveDateTime"]).year == 2015,
    ),
    (
        "date eq day",
        "Observation",
        [("date", "2015-05-28")],
        lambda r: utc(r["effectiveDateTime"]).date().isoformat() == "2015-05-28",
    ),
    (
        "date AND range",
        "Observation",
        [("date", "ge2014-01-01"), ("date", "lt2015-01-01")],
        lambda r: (
            datetime(2014, 1, 1, tzinfo=UTC)
            <= utc(r["effectiveDateTime"])
            < datetime(2015, 1, 1, tzinfo=UTC)
        ),
    ),
    (
        "date Period eq month",
        "Encounter",
        [("date", "2016-05")],
        lambda r: (
            utc(r["period"]["start"]) >= datetime(2016, 5, 1, tzinfo=UTC)
            and utc(r["period"]["end"]) < datetime(2016, 6, 1, tzinfo=UTC)
        ),
    ),
    (
        "date Period gt",
        "Encounter",
        [("date", "gt2018-01-01T00:00:00Z")],
        lambda r: utc(r["period"]["end"]) > datetime(2018, 1, 1, 0, 0, 0, 999000, tzinfo=UTC),
    ),
    (
        "date birthdate le",
        "Patient",
        [("birthdate", "le1960")],
        lambda r: r["birthDate"][:4] <= "1960",
    ),
    (
        "quantity any unit",
        "Observation",
        [("value-quantity", "gt100")],
        lambda r: "valueQuantity" in r and r["valueQuantity"]["value"] > 100,
    ),
    (
        "quantity ucum kg",
        "Observation",
        [("value-quantity", "ge70|http://unitsofmeasure.org|kg")],
        lambda r: (
            r.get("valueQuantity", {}).get("code") == "kg" and r["valueQuantity"]["value"] >= 70
        ),
    ),
    (
        "quantity ucum g = kg",
        "Observation",
        [("value-quantity", "ge70000|http://unitsofmeasure.org|g")],
        lambda r: (
            r.get("valueQuantity", {}).get("code") == "kg" and r["valueQuantity"]["value"] >= 70
        ),
    ),
    (
        "quantity code only",
        "Observation",
        [("value-quantity", "lt20||mmol/L")],
        lambda r: (
            r.get("valueQuantity", {}).get("code") == "mmol/L" and r["valueQuantity"]["value"] < 20
        ),
    ),
    (
        "quantity :missing",
        "Observation",
        [("value-quantity:missing", "true")],
        lambda r: "valueQuantity" not in r,
    ),
    (
        "composite",
        "Observation",
        [("code-value-quantity", "http://loinc.org|8302-2$gt170")],
        lambda r: (
            ("http://loinc.org", "8302-2") in codes(r["code"])
            and r.get("valueQuantity", {}).get("value", 0) > 170
        ),
    ),
    (
        "reference",
        "Observation",
        [("subject", "Patient/018f428e-34f6-4707-8009-5ad742f901e7")],
        lambda r: ref_id(r, "subject") == "Patient/018f428e-34f6-4707-8009-5ad742f901e7",
    ),
    (
        "reference typed id",
        "Observation",
        [("subject:Patient", "018f428e-34f6-4707-8009-5ad742f901e7"), ("code", "8302-2")],
        lambda r: (
            ref_id(r, "subject") == "Patient/018f428e-34f6-4707-8009-5ad742f901e7"
            and "8302-2" in [c for _, c in codes(r["code"])]
        ),
    ),
    (
        "_tag",
        "Condition",
        [("_tag", "https://smarthealthit.org/tags|synthea-5-2019")],
        lambda r: any(t.get("code") == "synthea-5-2019" for t in r.get("meta", {}).get("tag", [])),
    ),
    (
        "_id",
        "Patient",
        [("_id", "018f428e-34f6-4707-8009-5ad742f901e7,nope")],
        lambda r: r["id"] == "018f428e-34f6-4707-8009-5ad742f901e7",
    ),
    ("uri", "Observation", [("_profile", "http://x/none")], lambda r: False),
]


@pytest.mark.parametrize(("name", "rt", "params", "pred"), CASES, ids=[c[0] for c in CASES])
async def test_search_matches_plain_python(
    db: Any,
    registry: Any,
    synthea: list[R],
    name: str,
    rt: str,
    params: list[tuple[str, str]],
    pred: Callable[[R], bool],
) -> None:
    expected = of(synthea, rt, pred)
    assert expected or name in EMPTY_OK, "the case must select something to prove anything"
    got = await all_ids(db, registry, rt, params + [("_count", "200")])
    assert len(got) == len(set(got)), "a row repeated across pages"
    assert set(got) == expected
    assert await count(db, registry, parse_search(rt, params, registry)) == len(expected)


async def test_chain_one_and_two_levels(db: Any, registry: Any, synthea: list[R]) -> None:
    female = {
        f"Patient/{r['id']}"
        for r in synthea
        if r["resourceType"] == "Patient" and r["gender"] == "female"
    }
    exp = of(synthea, "Observation", lambda r: ref_id(r, "subject") in female)
    assert (
        set(
            await all_ids(
                db, registry, "Observation", [("patient.gender", "female"), ("_count", "500")]
            )
        )
        == exp
    )
    orgs = {
        f"Organization/{r['id']}"
        for r in synthea
        if r["resourceType"] == "Organization" and fold(r["name"]).startswith("morton")
    }
    encs = {
        f"Encounter/{r['id']}"
        for r in synthea
        if r["resourceType"] == "Encounter" and ref_id(r, "serviceProvider") in orgs
    }
    exp2 = of(synthea, "Observation", lambda r: ref_id(r, "encounter") in encs)
    got = await all_ids(
        db,
        registry,
        "Observation",
        [("encounter.service-provider.name", "morton"), ("_count", "500")],
    )
    assert exp2 and set(got) == exp2


async def test_has_and_nested_has(db: Any, registry: Any, synthea: list[R]) -> None:
    subj = {
        ref_id(r, "subject")
        for r in synthea
        if r["resourceType"] == "Observation" and "39156-5" in [c for _, c in codes(r["code"])]
    }
    got = await all_ids(db, registry, "Patient", [("_has:Observation:patient:code", "39156-5")])
    assert set(got) == subj
    # Patients with an Encounter that some Observation with code 8302-2 points to.
    encs = {
        ref_id(r, "encounter")
        for r in synthea
        if r["resourceType"] == "Observation" and "8302-2" in [c for _, c in codes(r["code"])]
    }
    pats = {
        ref_id(r, "subject")
        for r in synthea
        if r["resourceType"] == "Encounter" and f"Encounter/{r['id']}" in encs
    }
    got = await all_ids(
        db,
        registry,
        "Patient",
        [("_has:Encounter:patient:_has:Observation:encounter:code", "8302-2")],
    )
    assert set(got) == pats


async def test_include_and_revinclude(db: Any, registry: Any, synthea: list[R]) -> None:
    pid = PID
    req = parse_search(
        "Observation",
        [
            ("subject", f"Patient/{pid}"),
            ("code", "8302-2"),
            ("_include", "Observation:patient"),
            ("_include", "Observation:encounter"),
        ],
        registry,
    )
    page = await run_search(db, registry, req)
    encs = {
        ref_id(r, "encounter")
        for r in synthea
        if r["resourceType"] == "Observation"
        and ref_id(r, "subject") == f"Patient/{pid}"
        and "8302-2" in [c for _, c in codes(r["code"])]
    }
    assert {f"{r['resourceType']}/{r['id']}" for r in page.included} == encs | {f"Patient/{pid}"}
    req = parse_search("Patient", [("_id", pid), ("_revinclude", "Encounter:patient")], registry)
    page = await run_search(db, registry, req)
    exp = of(synthea, "Encounter", lambda r: ref_id(r, "subject") == f"Patient/{pid}")
    assert {f"Encounter/{r['id']}" for r in page.included} == exp
    # :iterate: Encounters of the patient, then the Organizations they name.
    req = parse_search(
        "Patient",
        [
            ("_id", pid),
            ("_revinclude", "Encounter:patient"),
            ("_include:iterate", "Encounter:service-provider"),
        ],
        registry,
    )
    page = await run_search(db, registry, req)
    orgs = {ref_id(r, "serviceProvider") for r in synthea if f"Encounter/{r['id']}" in exp}
    assert orgs <= {f"{r['resourceType']}/{r['id']}" for r in page.included}
    bundle = searchset_bundle(page, req, "http://x/fhir")
    modes = {e["search"]["mode"] for e in bundle["entry"]}
    assert modes == {"match", "include"}


async def test_sort_and_paging(db: Any, registry: Any, synthea: list[R]) -> None:
    params = [("code", "8302-2"), ("_sort", "-date,_id"), ("_count", "17")]
    got = await all_ids(db, registry, "Observation", params)
    by_id = {f"Observation/{r['id']}": r for r in synthea if r["resourceType"] == "Observation"}
    exp = sorted(
        (k for k, r in by_id.items() if "8302-2" in [c for _, c in codes(r["code"])]),
        key=lambda k: (-utc(by_id[k]["effectiveDateTime"]).timestamp(), k),
    )
    assert got == exp
    # previous link goes back to the same first page
    req = parse_search("Observation", params, registry)
    p1 = await run_search(db, registry, req)
    p2 = await run_search(
        db,
        registry,
        parse_search("Observation", params + [("_cursor", p1.next_cursor or "")], registry),
    )
    back = await run_search(
        db,
        registry,
        parse_search("Observation", params + [("_cursor", p2.prev_cursor or "")], registry),
    )
    assert [r["id"] for r in back.resources] == [r["id"] for r in p1.resources]
    assert p1.total == len(exp)
    b = searchset_bundle(p2, req, "http://x/fhir")
    rels = {link["relation"] for link in b["link"]}
    assert rels == {"self", "next", "previous"}


async def test_cursor_stays_correct_while_data_changes(
    db: Any, registry: Any, synthea: list[R]
) -> None:
    params = [("code", "29463-7"), ("_count", "10")]
    p1 = await run_search(db, registry, parse_search("Observation", params, registry))
    first = p1.resources[0]["id"]
    # Delete a row of page 1: page 2 must neither skip nor repeat.
    doc = await db["resources"].find_one_and_delete({"_id": f"Observation/{first}"})
    try:
        p2 = await run_search(
            db,
            registry,
            parse_search("Observation", params + [("_cursor", p1.next_cursor or "")], registry),
        )
        ids1 = [r["id"] for r in p1.resources]
        ids2 = [r["id"] for r in p2.resources]
        assert not set(ids1) & set(ids2) and ids2[0] > ids1[-1]
    finally:
        await db["resources"].insert_one(doc)


async def test_summary_elements_total(db: Any, registry: Any, synthea: list[R]) -> None:
    n = len(of(synthea, "Observation", lambda r: True))
    page = await run_search(
        db, registry, parse_search("Observation", [("_summary", "count")], registry)
    )
    assert page.total == n and page.resources == []
    page = await run_search(
        db,
        registry,
        parse_search("Observation", [("_elements", "status,subject"), ("_count", "3")], registry),
    )
    for r in page.resources:
        assert set(r) <= {"resourceType", "id", "meta", "status", "subject", "code"}
        assert any(t["code"] == "SUBSETTED" for t in r["meta"]["tag"])
    page = await run_search(
        db, registry, parse_search("Patient", [("_summary", "true"), ("_count", "1")], registry)
    )
    assert "text" not in page.resources[0] and "name" in page.resources[0]
    page = await run_search(
        db, registry, parse_search("Observation", [("_total", "none")], registry)
    )
    assert page.total is None


async def test_compartment_search(db: Any, registry: Any, synthea: list[R]) -> None:
    pid = PID
    exp = of(synthea, "Observation", lambda r: ref_id(r, "subject") == f"Patient/{pid}")
    got = await all_ids(
        db, registry, "Observation", [("_count", "500")], compartment=f"Patient/{pid}"
    )
    assert set(got) == exp


async def test_last_updated_and_system_level(db: Any, registry: Any, synthea: list[R]) -> None:
    page = await run_search(
        db,
        registry,
        parse_search(None, [("_type", "Patient,Organization"), ("_count", "0")], registry),
    )
    assert page.total == len(
        of(synthea, "Patient", lambda r: True) | of(synthea, "Organization", lambda r: True)
    )
    page = await run_search(
        db, registry, parse_search("Patient", [("_lastUpdated", "gt2030-01-01")], registry)
    )
    assert page.total == 0
    page = await run_search(
        db, registry, parse_search("Patient", [("_lastUpdated", "ge2024-01-01")], registry)
    )
    assert page.total == len(of(synthea, "Patient", lambda r: True))


async def test_strict_and_lenient(db: Any, registry: Any) -> None:
    with pytest.raises(BadRequest):
        parse_search("Patient", [("nonsense", "1")], registry)
    with pytest.raises(NotSupported):
        parse_search("Patient", [("_filter", "name eq x")], registry)
    req = parse_search(
        "Patient",
        [("nonsense", "1"), ("gender", "male"), ("birthdate", "notadate")],
        registry,
        strict=False,
    )
    assert [n for n, _, _ in req.dropped] == ["nonsense", "birthdate"]
    bundle = searchset_bundle(await run_search(db, registry, req), req, "http://x/fhir")
    self_url = bundle["link"][0]["url"]
    assert self_url == "http://x/fhir/Patient?gender=male"


async def test_find_matches(db: Any, registry: Any) -> None:
    got = await find_matches(
        db,
        registry,
        "Patient",
        "identifier=http://hospital.smarthealthit.org|e925b0f3-8006-43f6-aa31-94bd215e55e7&gender=male",
    )
    assert [r["id"] for r in got] == [PID]
    assert len(await find_matches(db, registry, "Patient", "gender=male")) == 2
    with pytest.raises(BadRequest):
        await find_matches(db, registry, "Patient", "bogus=1")
