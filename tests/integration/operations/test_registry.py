"""The operation registry, its one parameter parser and the definitions generated from it
(fhir_server/operations/), through the whole HTTP app on a real database.

A probe operation joins the table for this module only, so every rule of the parser (unknown,
missing, repeated, mistyped, not a Parameters body; query, form and Parameters alike) and of
the routing (405 with Allow, GET of a state-changing operation) is checked once, through the
same dispatch the real operations use.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from fhir_server.operations import definitions
from fhir_server.operations.registry import (
    Operation,
    OperationCall,
    OperationTable,
    Parameter,
    Params,
)
from fhir_server.operations.table import TABLE
from fhir_server.rest.messages import FhirResponse
from tests.conftest import FHIR_JSON, patient
from tests.integration.access.test_smart_enforcement import Server
from tests.integration.seeded import seeded_server

BASE = "http://127.0.0.1:8080/fhir"
Doc = dict[str, Any]


async def _echo(ctx: Any, req: Any, call: OperationCall) -> FhirResponse:
    """The typed values as a Parameters resource, with the call's level."""
    out = [{"name": n, "valueString": repr(v)} for n, v, _ in call.params.items]
    out += [{"name": "dropped", "valueString": n} for n, _, _ in call.params.dropped]
    out.append({"name": "level", "valueString": f"{call.level} {call.rt} {call.rid}"})
    return FhirResponse(status=200, body={"resourceType": "Parameters", "parameter": out})


PROBE = Operation(
    name="probe",
    levels=frozenset({"system", "type", "instance"}),
    types=frozenset({"Patient"}),
    methods=frozenset({"GET", "POST"}),
    interaction="read",
    parameters=(
        Parameter("who", "reference", min=1),
        Parameter("n", "integer"),
        Parameter("flag", "boolean"),
        Parameter("when", "date"),
        Parameter("tag", "code", max="*", values=("a", "b")),
        Parameter("res", "Resource"),
    ),
    handler=_echo,
    unsupported=frozenset({"later"}),
)
CHANGE = Operation(
    name="change",
    levels=frozenset({"instance"}),
    types=frozenset({"Patient"}),
    methods=frozenset({"POST"}),
    interaction="update",
    parameters=(),
    handler=_echo,
    affects_state=True,
)


@pytest.fixture(scope="module")
async def probed(client: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    saved = ctx.operations
    ctx.operations = OperationTable((*TABLE.operations, PROBE, CHANGE), TABLE.routes)
    ctx.capability = ctx.capability_json = None
    try:
        yield client
    finally:
        ctx.operations = saved
        ctx.capability = ctx.capability_json = None


def _values(body: Doc) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in body["parameter"]:
        out.setdefault(p["name"], []).append(p["valueString"])
    return out


def _bad(r: httpx.Response, status: int, code: str, name: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    issue = body["issue"][0]
    assert issue["code"] == code, issue
    assert name in issue["diagnostics"], issue


async def test_query_form_and_parameters_give_the_same_typed_values(
    probed: httpx.AsyncClient,
) -> None:
    query = {"who": "Patient/1", "n": "7", "flag": "true", "when": "2020-02", "tag": "a"}
    got = await probed.get("$probe", params=[*query.items(), ("tag", "b"), ("_format", "json")])
    assert got.status_code == 200, got.text
    expected = {
        "who": ["'Patient/1'"],
        "n": ["7"],
        "flag": ["True"],
        "when": ["'2020-02'"],
        "tag": ["'a'", "'b'"],
        "level": ["system None None"],
    }
    assert _values(got.json()) == expected
    form = "who=Patient%2F1&n=7&flag=true&when=2020-02&tag=a&tag=b"
    posted = await probed.post(
        "$probe", content=form, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert posted.status_code == 200, posted.text
    assert _values(posted.json()) == expected
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "who", "valueReference": {"reference": "Patient/1"}},
            {"name": "n", "valueInteger": 7},
            {"name": "flag", "valueBoolean": True},
            {"name": "when", "valueDate": "2020-02"},
            {"name": "tag", "valueCode": "a"},
            {"name": "tag", "valueString": "b"},
        ],
    }
    r = await probed.post("$probe", json=body, headers=FHIR_JSON)
    assert r.status_code == 200, r.text
    assert _values(r.json()) == expected
    # Type and instance level reach the same row, with the call's level.
    r = await probed.get("Patient/x1/$probe", params={"who": "Patient/1"})
    assert _values(r.json())["level"] == ["instance Patient x1"]
    r = await probed.get("Patient/$probe", params={"who": "Patient/1"})
    assert _values(r.json())["level"] == ["type Patient None"]
    # A Resource parameter travels in a Parameters body only.
    res = {"name": "res", "resource": patient()}
    r = await probed.post(
        "$probe",
        json={"resourceType": "Parameters", "parameter": [body["parameter"][0], res]},
        headers=FHIR_JSON,
    )
    assert r.status_code == 200 and "'resourceType': 'Patient'" in r.text


@pytest.mark.parametrize(
    ("query", "status", "code", "name"),
    [
        ([("who", "Patient/1"), ("nope", "1")], 400, "invalid", "'nope'"),
        ([("who", "Patient/1"), ("later", "1")], 400, "not-supported", "'later'"),
        ([("n", "1")], 400, "required", "'who'"),
        ([("who", "Patient/1"), ("who", "Patient/2")], 400, "invalid", "'who'"),
        ([("who", "Patient/1"), ("n", "seven")], 400, "invalid", "'n'"),
        ([("who", "Patient/1"), ("flag", "yes")], 400, "invalid", "'flag'"),
        ([("who", "Patient/1"), ("when", "2020-13")], 400, "invalid", "'when'"),
        ([("who", "Patient/1"), ("tag", "c")], 400, "invalid", "'tag'"),
        ([("who", "Patient/1"), ("res", "{}")], 400, "invalid", "'res'"),
        ([("who", "Patient/1"), ("n", "")], 400, "invalid", "'n'"),
    ],
)
async def test_bad_query_parameters_answer_400_naming_the_parameter(
    probed: httpx.AsyncClient, query: list[tuple[str, str]], status: int, code: str, name: str
) -> None:
    _bad(await probed.get("$probe", params=query), status, code, name)


@pytest.mark.parametrize(
    ("entries", "code", "name"),
    [
        ([{"name": "who", "valueInteger": 1}], "invalid", "'who'"),
        (
            [{"name": "who", "valueString": "Patient/1"}, {"name": "n", "valueString": "7"}],
            "invalid",
            "'n'",
        ),
        (
            [{"name": "who", "valueString": "Patient/1"}, {"name": "flag", "valueBoolean": "true"}],
            "invalid",
            "'flag'",
        ),
        (
            [{"name": "who", "valueString": "Patient/1"}, {"name": "res", "valueString": "x"}],
            "invalid",
            "'res'",
        ),
        (
            [
                {"name": "who", "valueString": "Patient/1"},
                {"name": "n", "valueInteger": 1, "valueString": "1"},
            ],
            "invalid",
            "'n'",
        ),
        (
            [{"name": "who", "valueString": "Patient/1"}, {"valueString": "x"}],
            "required",
            "parameter[1]",
        ),
        ([{"name": "n", "valueInteger": 1}], "required", "'who'"),
    ],
)
async def test_bad_parameters_bodies_answer_400_naming_the_parameter(
    probed: httpx.AsyncClient, entries: list[Doc], code: str, name: str
) -> None:
    body = {"resourceType": "Parameters", "parameter": entries}
    r = await probed.post("$probe", json=body, headers=FHIR_JSON)
    _bad(r, 400, code, name)


async def test_a_body_that_is_not_parameters_lenient_and_methods(
    probed: httpx.AsyncClient,
) -> None:
    r = await probed.post("$probe", json=patient(), headers=FHIR_JSON)
    _bad(r, 400, "invalid", "Parameters")
    # Lenient: unknown, unsupported and malformed values are dropped and handed on.
    r = await probed.get(
        "$probe",
        params=[("who", "Patient/1"), ("nope", "1"), ("n", "x"), ("later", "2")],
        headers={"Prefer": "handling=lenient"},
    )
    assert r.status_code == 200, r.text
    assert _values(r.json())["dropped"] == ["nope", "n", "later"]
    # ... but a missing required parameter is still an error.
    _bad(
        await probed.get("$probe", headers={"Prefer": "handling=lenient"}), 400, "required", "'who'"
    )
    # Methods: 405 with the Allow header; a state-changing operation never takes GET.
    r = await probed.delete("$probe")
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST, HEAD"
    pid = (await probed.post("Patient", json=patient(), headers=FHIR_JSON)).json()["id"]
    r = await probed.get(f"Patient/{pid}/$change")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert r.json()["issue"][0]["code"] == "not-supported"
    assert (
        await probed.post(f"Patient/{pid}/$change", json={"resourceType": "Parameters"})
    ).status_code == 200
    with pytest.raises(ValueError, match="cannot take GET"):
        Operation(
            "x",
            frozenset({"system"}),
            None,
            frozenset({"GET"}),
            "read",
            (),
            _echo,
            affects_state=True,
        )
    # Unknown operations, and known ones at a level or type they are not registered for.
    for url in (
        "$nope",
        "Patient/$nope",
        f"Patient/{pid}/$nope",
        "Observation/$probe",
        "Patient/1/x/$probe",
    ):
        r = await probed.get(url)
        assert r.status_code == 404, url
        assert r.json()["issue"][0]["code"] == "not-supported", url
    assert (await probed.get("$validate")).status_code == 404  # type and instance only
    # HEAD runs GET, except where a GET starts work (an export kick-off).
    assert (await probed.head("$probe", params={"who": "Patient/1"})).status_code == 200
    r = await probed.head("$export", headers={"Prefer": "respond-async"})
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST"
    r = await probed.get("Patient/$validate")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    # $validate reads its mode wherever it is sent, and says what lenient handling dropped.
    r = await probed.post("Patient/$validate?mode=remove", json=patient(), headers=FHIR_JSON)
    _bad(r, 400, "invalid", "'mode'")
    lenient = {**FHIR_JSON, "Prefer": "handling=lenient"}
    r = await probed.post("Patient/$validate?profile=x&y=1", json=patient(), headers=lenient)
    assert r.status_code == 200, r.text
    issues = r.json()["issue"]
    assert issues[0]["diagnostics"] == "the resource is valid"
    assert [i["severity"] for i in issues[1:]] == ["warning", "warning"]
    assert "'profile'" in issues[1]["diagnostics"] and "'y'" in issues[2]["diagnostics"]


def _definitions(cs: Doc) -> list[tuple[str | None, Doc]]:
    rest = cs["rest"][0]
    out: list[tuple[str | None, Doc]] = [(None, o) for o in rest.get("operation", [])]
    out += [(r["type"], o) for r in rest["resource"] for o in r.get("operation", [])]
    return out


async def test_capability_statement_lists_every_operation_with_a_resolving_definition(
    probed: httpx.AsyncClient,
) -> None:
    cs = (await probed.get("metadata")).json()
    listed = _definitions(cs)
    ctx = probed.app.state.ctx  # type: ignore[attr-defined]
    expected_ids = {op.definition_id for op in ctx.operations.operations}
    resolved: dict[str, Doc] = {}
    for rt, entry in listed:
        url = entry["definition"]
        if url.startswith(f"{BASE}/OperationDefinition/"):
            r = await probed.get(url.removeprefix(f"{BASE}/"))
            assert r.status_code == 200, url
            d = r.json()
            assert d["url"] == url
        else:
            # A published definition: ours names it as `base`, found by search.
            found = (await probed.get("OperationDefinition", params={"base": url})).json()
            assert found["total"] == 1, url
            d = found["entry"][0]["resource"]
            assert d["base"] == url
            assert (await probed.get(f"OperationDefinition/{d['id']}")).json() == d
        assert d["code"] == entry["name"] and d["kind"] == "operation"
        if rt is None:
            assert d["system"] is True
        else:
            assert d["type"] or d["instance"]
            assert rt in d["resource"] or d["resource"] == ["Resource"]
        resolved[d["id"]] = d
    assert set(resolved) == expected_ids
    # The standard ones keep their published canonicals (Bulk Data clients look for them).
    assert (
        resolved["export"]["base"] == "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"
    )
    assert resolved["Patient-everything"]["base"].endswith("/Patient-everything")
    probe = resolved["probe"]
    assert [p["name"] for p in probe["parameter"]] == ["who", "n", "flag", "when", "tag", "res"]
    assert probe["parameter"][0] == {
        "name": "who",
        "use": "in",
        "min": 1,
        "max": "1",
        "type": "Reference",
    }
    assert {"system": True, "type": True, "instance": True}.items() <= probe.items()
    # Every generated definition is a valid R4 OperationDefinition.
    for d in resolved.values():
        r = await probed.post("OperationDefinition/$validate", json=d, headers=FHIR_JSON)
        assert r.status_code == 200, r.text
        errors = [i for i in r.json()["issue"] if i["severity"] in ("error", "fatal")]
        assert not errors, (d["id"], errors)
    # Search and the rest of the type.
    assert (await probed.get("OperationDefinition", params={"code": "export"})).json()["total"] == 3
    assert (await probed.get("OperationDefinition/no-such")).status_code == 404
    r = await probed.put("OperationDefinition/export", json=resolved["export"], headers=FHIR_JSON)
    assert r.status_code == 405
    assert (await probed.get("OperationDefinition", params={"status": "x"})).status_code == 400
    [od] = [r for r in cs["rest"][0]["resource"] if r["type"] == "OperationDefinition"]
    assert od["interaction"] == [{"code": "read"}, {"code": "search-type"}]


def test_the_table_refuses_bad_rows() -> None:
    known = frozenset({"Patient"})
    OperationTable((PROBE, CHANGE)).check(known)
    with pytest.raises(ValueError, match="unknown resource types"):
        OperationTable((PROBE,)).check(frozenset({"Observation"}))
    typo = Operation("t", frozenset({"system"}), None, frozenset({"GET"}), "read",
                     (Parameter("x", "strng"),), _echo)  # fmt: skip
    with pytest.raises(ValueError, match="'strng'"):
        OperationTable((typo,)).check(known)
    TABLE.check(frozenset(t for op in TABLE.operations for t in op.types or ()))
    with pytest.raises(ValueError, match="registered twice"):
        OperationTable(
            (
                PROBE,
                Operation(
                    "probe",
                    frozenset({"system"}),
                    None,
                    frozenset({"GET"}),
                    "read",
                    (),
                    _echo,
                    id="p2",
                ),
            )
        )
    assert Params([("a", 1, "1")]).get("a") == 1 and Params().all("a") == []
    assert definitions.definition_url(BASE, PROBE) == f"{BASE}/OperationDefinition/probe"


# --- with tokens ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def server(mongo_uri: str) -> AsyncIterator[Server]:
    async with seeded_server(mongo_uri) as (_, http):
        yield Server(http)


async def test_definitions_are_read_with_any_token(server: Server) -> None:
    """They describe the server, as the CapabilityStatement does: no scope is needed."""
    for role, scope in (
        ("basic-user", "openid fhirUser user/Immunization.rs"),
        ("sponsor", "openid fhirUser patient/Observation.rs launch/patient"),
    ):
        token = await server.token(role, scope)
        r = await server.get(token, "OperationDefinition/Patient-everything")
        assert r.status_code == 200, r.text
        found = await server.get(token, "OperationDefinition", code="validate")
        assert found.status_code == 200 and found.json()["total"] == 1
        # ... and the operations themselves still need their interaction.
        r = await server.post(token, "Patient/$validate", {"resourceType": "Patient"})
        assert r.status_code == 403
    r = await server.http.get("/fhir/OperationDefinition/export")
    assert r.status_code == 401  # a token is still needed, as for every FHIR URL but metadata
