"""A bounded grammar fuzz of search requests: no input may answer 5xx.

Every registry parameter type x its modifiers (and bogus ones) x the prefixes x odd values
(year-1 and year-9999 dates, huge and tiny quantities, over-long `:contains`, escapes,
operators, unicode), on resource types drawn from the registry, plus the result parameters.
The generator is deterministic (fixed seed), so a failure names a request that reproduces.
Each request must answer 2xx with a Bundle or 4xx with an OperationOutcome
(https://hl7.org/fhir/R4/search.html#errors).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from fhir_server.search.parse import MODIFIERS, PREFIXES
from fhir_server.search.registry import Registry
from tests.conftest import FHIR_JSON, make_settings, patient, running_app

SEED = 20260101
REQUESTS = 2000
UCUM = "http://unitsofmeasure.org"

DATES = [
    "0001",
    "0001-01",
    "0001-01-01",
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00+14:00",
    "0001-01-01T00:30:00-14:00",
    "9999",
    "9999-12",
    "9999-12-31",
    "9999-12-31T23:59:59.999Z",
    "9999-12-31T23:59:59-14:00",
    "9999-12-31T23:00:00+14:00",
    "2020",
    "2020-02-29",
    "2021-02-29",
    "2020-13-01",
    "2020-01-01T25:00:00Z",
    "2020-01-01T10",
    "2020-01-01T10:00",
    "2020-01-01T10:00:00.123456789+05:30",
    "1970-01-01T00:00:00Z",
    "20200101",
    "abc",
    "-2020",
]
NUMBERS = [
    "0",
    "-0",
    "1e-400",
    "-1e-400",
    "1e400",
    "1e308",
    "-1e308",
    "1.7976931348623157e308",
    "5e-324",
    "1e-320",
    "NaN",
    "Infinity",
    "1.",
    ".5",
    "100",
    "0.000000000000000000000000000001",
    "9" * 400,
    "abc",
    "1,2",
]
UNITS = [f"|{UCUM}|mg", f"|{UCUM}|mg/dL", f"|{UCUM}|ng/min", f"|{UCUM}|kg", "||mg", "|http://x|"]
STRINGS = [
    "a",
    "Test",
    "x" * 300,
    "x" * 1200,
    "y" * 5000,
    "%",
    ".*",
    "^$",
    "(",
    "[a-",
    "\\",
    "\\,",
    "\\|",
    "\\$",
    "é",
    "\u200b\u200b",
    "a b  c",
    "$where",
    "{'$gt': ''}",
    '"',
]
TOKENS = [
    "a|b",
    "|b",
    "a|",
    "|",
    "\\|",
    "http://loinc.org|1234-5",
    "http://snomed.info/sct|73211009",
    "http://terminology.hl7.org/CodeSystem/v2-0203|MR|123",
    "t" * 2000,
    "$ne",
]
REFERENCES = [
    "Patient/p1",
    "p1",
    "http://other.example/fhir/Patient/1",
    "Patient/",
    "/",
    "Patient/p1/_history/1",
    "Nope/1",
    "r" * 3000,
]
URIS = ["http://x", "urn:uuid:0a9c1b3e-0000-4000-8000-000000000000", "u" * 3000, "%zz"]
COMPOSITES = [
    "a$b",
    "http://loinc.org|1234-5$1e-400",
    "x$ap0001-01-01",
    "x$eb0001-01-01",
    f"x$1e-400|{UCUM}|mg",
    "a$b$c",
    "$",
]
VALUES = {
    "string": STRINGS,
    "token": TOKENS,
    "reference": REFERENCES,
    "uri": URIS,
    "composite": COMPOSITES,
    "special": STRINGS[:3] + TOKENS[:2],
}
RESULT_PARAMS = [
    ("_count", ["0", "-1", "1000", "1001", "1e3", "abc", "9" * 30]),
    ("_sort", ["_id", "-_lastUpdated", "birthdate,-name", "nope", "-", "", "code"]),
    ("_summary", ["count", "true", "text", "bogus"]),
    ("_total", ["accurate", "none", "bogus"]),
    ("_include", ["*", "Patient:general-practitioner", "Nope:x", ":", "Observation:subject"]),
    ("_revinclude", ["Observation:subject", "Observation:nope", "x"]),
    ("_elements", ["id", "name,gender", "", ","]),
    ("_id", ["p1", "a,b", "x" * 3000]),
    ("_lastUpdated", [p + d for p in ("ap", "ne", "eb", "sa", "") for d in DATES[:12]]),
    ("_text", ["blood", "a " * 30, "x" * 3000]),
    ("_content", ["pat", "é"]),
    ("_filter", ["name eq x"]),
    ("_has:Observation:patient:code", ["1234-5", "x"]),
    ("_has:Nope:patient:code", ["1"]),
]


def ordered_values(kind: str) -> list[str]:
    if kind == "date":
        return DATES
    if kind == "number":
        return NUMBERS
    return NUMBERS + [n + u for n in NUMBERS for u in UNITS]


def prefixes() -> list[str]:
    return ["", *PREFIXES, "xx"]


def generate(registry: Registry, count: int, seed: int = SEED) -> Iterator[str]:
    """`count` search URLs (relative to the base), the same ones for the same seed."""
    rng = random.Random(seed)
    by_type: dict[str, list[tuple[str, str]]] = {}
    for rt in registry.resource_types:
        for code, p in sorted(registry.params_for(rt).items()):
            by_type.setdefault(p.type, []).append((rt, code))
    # `special` (only `near`, unsupported) is drawn rarely: it answers 400 whatever follows.
    kinds = sorted(set(by_type) - {"special"})
    for i in range(count):
        kind = "special" if i % 97 == 0 else kinds[i % len(kinds)]
        rt, code = rng.choice(by_type[kind])
        roll = rng.random()
        if roll < 0.55:
            mod = None
        elif roll < 0.92:
            mod = rng.choice([None, *MODIFIERS.get(kind, ())])
        else:
            mod = rng.choice(["bogus", "Patient", ""])
        name = code if mod is None else f"{code}:{mod}"
        if mod == "missing":
            value = rng.choice(["true", "false", "true", "maybe"])
        elif kind in ("date", "number", "quantity"):
            value = rng.choice(prefixes()) + rng.choice(ordered_values(kind))
        else:
            value = rng.choice(VALUES.get(kind, STRINGS))
        if rng.random() < 0.15:  # an OR list
            value = f"{value},{rng.choice(VALUES['token'])}"
        query = [(name, value)]
        if rng.random() < 0.3:
            extra, choices = rng.choice(RESULT_PARAMS)
            query.append((extra, rng.choice(choices)))
        if rng.random() < 0.05:  # a chain through a reference parameter
            rrt, rcode = rng.choice(by_type["reference"])
            rt = rrt
            query = [(f"{rcode}.{code}", value)]
        yield f"{rt}?" + "&".join(f"{quote(k, safe=':._-')}={quote(v, safe='')}" for k, v in query)


def regressions(registry: Registry) -> list[str]:
    """The inputs that once answered 5xx (issue: bad input), on every parameter they hit."""
    urls: list[str] = []
    for rt in registry.resource_types:
        for code, p in sorted(registry.params_for(rt).items()):
            if p.type == "date" and rt in ("Patient", "Observation", "Encounter", "Condition"):
                urls += [f"{rt}?{code}={pre}0001-01-01" for pre in ("ap", "ne", "eb", "sa")]
                urls.append(f"{rt}?{code}=ap9999-12-31T23:59:59.999Z")
            if p.type == "quantity" and rt in ("Observation", "Substance", "RiskAssessment"):
                urls.append(f"{rt}?{code}=1e-400|{quote(UCUM, safe='')}|mg")
                urls.append(f"{rt}?{code}=ap1e308|{quote(UCUM, safe='')}|kg")
            if p.type == "string" and rt == "Patient":
                urls.append(f"{rt}?{code}:contains={'z' * 5000}")
    urls += [f"Patient?_lastUpdated={pre}0001-01-01" for pre in ("ap", "ne", "eb")]
    return urls


@pytest.fixture(scope="module")
async def client(mongo_uri: str) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(make_settings(mongo_uri)) as c:
        # A little data, so filters and the in-memory post-check see documents.
        await c.put("Patient/p1", json=patient(id="p1", birthDate="0001-01-01"), headers=FHIR_JSON)
        obs: dict[str, Any] = {
            "resourceType": "Observation",
            "id": "o1",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "1234-5"}]},
            "subject": {"reference": "Patient/p1"},
            "effectiveDateTime": "9999-12-31T23:59:59Z",
            "valueQuantity": {"value": 5e-300, "system": UCUM, "code": "mg"},
        }
        await c.put("Observation/o1", json=obs, headers=FHIR_JSON)
        yield c


def check(url: str, r: httpx.Response) -> str | None:
    """Why the answer is wrong, or None."""
    if r.status_code >= 500:
        return f"{r.status_code} {url[:200]} {r.text[:200]}"
    try:
        body = r.json()
    except ValueError:
        return f"{r.status_code} {url[:200]}: not JSON: {r.text[:200]}"
    want = "Bundle" if r.status_code < 300 else "OperationOutcome"
    if body.get("resourceType") != want:
        return f"{r.status_code} {url[:200]}: a {body.get('resourceType')}, not a {want}"
    return None


async def test_regressions_answer_4xx_or_2xx(client: httpx.AsyncClient) -> None:
    registry = Registry.load_default()
    failures = [f for url in regressions(registry) if (f := check(url, await client.get(url)))]
    assert failures == [], "\n".join(failures[:20])


async def test_grammar_fuzz_never_5xx(client: httpx.AsyncClient) -> None:
    registry = Registry.load_default()
    failures = []
    for url in generate(registry, REQUESTS):
        problem = check(url, await client.get(url))
        if problem:
            failures.append(problem)
    assert failures == [], f"{len(failures)} bad answers:\n" + "\n".join(failures[:30])


def test_generator_is_deterministic() -> None:
    registry = Registry.load_default()
    assert list(generate(registry, 50)) == list(generate(registry, 50))
