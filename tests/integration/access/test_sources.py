"""The sources of access, over HTTP with real SMART tokens: query-qualified scopes, login-level
scope cutting, operations' interactions, care teams and Groups.

Each test is a reproduction of a leak: a scope's `_has` or chain answering yes/no about data
the caller may not see, a wildcard-type scope with a query that granted everything, a Basic
login's `_has` on labs, `$validate` with no scope check, a self-made CareTeam conferring
access, a Group showing members the caller may not see.
https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.integration.access.test_care_teams import patients_of_nurse, patients_of_pcm
from tests.integration.access.test_smart_enforcement import Server, ids
from tests.integration.auth.conftest import BASE, authorize, exchange
from tests.integration.seeded import seeded_server

SPONSOR = "Patient/sponsor-james-carter"
SOPHIA = "Patient/adolescent-sophia-carter"
SAMUEL = "Patient/veteran-samuel-ortiz"
MARCUS = "Patient/cac-marcus-bell"
ROBERT = "Patient/retiree-robert-alvarez"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
POSITIVE, NEGATIVE = "10828004", "260385009"
PTSD = "47505003"
VITALS = "http://terminology.hl7.org/CodeSystem/observation-category|vital-signs"


async def grant(server: Server, role: str, scope: str) -> dict[str, Any]:
    """The token response (access token and the scopes actually granted)."""
    async with httpx.AsyncClient(transport=server.http._transport, base_url=BASE) as browser:
        auth = await authorize(browser, role, scope)
        r = await exchange(browser, auth)
        assert r.status_code == 200, r.text
        return dict(r.json())


@pytest.fixture(scope="module")
async def server(mongo_uri: str) -> AsyncIterator[Server]:
    async with seeded_server(mongo_uri) as (_, http):
        yield Server(http)


async def answers(server: Server, role: str, scope: str, url: str) -> tuple[int, str]:
    token = await server.token(role, f"openid fhirUser {scope}")
    r = await server.get(token, url)
    return r.status_code, r.json()["resourceType"]


async def test_has_scopes_do_not_see_what_the_caller_may_not(server: Server):
    # The sponsor may not see his adolescent's STI result: a scope's `_has` on it must answer
    # the same whether her test is positive or negative.
    has = "user/Patient.rs?_has:Observation:patient:code-value-concept="
    positive = f"{has}{LOINC}|43304-5${SNOMED}|{POSITIVE}"
    negative = f"{has}{LOINC}|43304-5${SNOMED}|{NEGATIVE}"
    a = await answers(server, "sponsor", positive, SOPHIA)
    b = await answers(server, "sponsor", negative, SOPHIA)
    assert a == b == (404, "OperationOutcome")
    # Words in her messages with the care team (hidden from him) tell nothing either.
    words = await answers(
        server, "sponsor", "user/Patient.rs?_has:Communication:patient:_content=test", SOPHIA
    )
    none = await answers(
        server, "sponsor", "user/Patient.rs?_has:Communication:patient:_content=zqxj", SOPHIA
    )
    assert words == none == (404, "OperationOutcome")
    # What the caller may see still works through a `_has` scope: the sponsor's own labs.
    own = await answers(
        server,
        "sponsor",
        f"user/Patient.rs?_has:Observation:patient:code={LOINC}|2093-3 user/Observation.rs",
        SPONSOR,
    )
    assert own == (200, "Patient")


async def test_a_chain_scope_through_a_self_made_group_is_no_oracle(server: Server):
    writer = await server.token("cac-user", "openid fhirUser user/Group.cruds")
    group = {
        "resourceType": "Group",
        "type": "person",
        "actual": True,
        "member": [{"entity": {"reference": MARCUS}}, {"entity": {"reference": SAMUEL}}],
    }
    # The write rules refuse a patient's Group outright; the scope must be no oracle even
    # through a Group that exists (one an organisation's loader stored, naming both).
    refused = await server.post(writer, "Group", group)
    assert refused.status_code == 403, refused.text
    app = server.http._transport.app  # type: ignore[attr-defined]
    made = await app.state.ctx.store.create("Group", group)
    gid = made.version.id
    chain = "user/Group.rs?member:Patient._has:Condition:patient:code="
    found = []
    for code in (PTSD, "0000000"):
        token = await server.token("cac-user", f"openid fhirUser {chain}{SNOMED}|{code}")
        r = await server.get(token, "Group", _count="50")
        assert r.status_code == 200, r.text
        found.append(f"Group/{gid}" in ids(r.json()))
    assert found == [False, False]


async def test_a_wildcard_type_with_a_query_is_enforced(server: Server):
    token = await server.token("sponsor", f"openid fhirUser user/*.rs?category={VITALS}")
    obs = (await server.get(token, "Observation", _count="200")).json()
    assert obs.get("entry"), "the sponsor has vital signs"
    for e in obs["entry"]:
        codes = {c.get("code") for cat in e["resource"]["category"] for c in cat["coding"]}
        assert "vital-signs" in codes, e["resource"]["id"]
    # A type whose parameters cannot say `category` gets nothing from the scope.
    assert (await server.get(token, SPONSOR)).status_code == 404
    assert ids((await server.get(token, "Patient")).json()) == set()
    assert ids((await server.get(token, "DiagnosticReport", _count="200")).json()) == set()
    # A search across types narrows each type by its own filter.
    across = (await server.get(token, "", _type="Observation,Patient", _count="200")).json()
    assert ids(across) and all(i.startswith("Observation/") for i in ids(across))
    assert ids(across) == ids(obs)


async def test_basic_login_scopes_are_cut_to_the_types_it_may_read(server: Server):
    has = f"user/Patient.rs?_has:Observation:patient:code-value-quantity={LOINC}|4548-4$gt7"
    granted = await grant(server, "basic-user", f"openid fhirUser {has} user/Immunization.rs")
    assert "_has" not in granted["scope"] and "user/Immunization.rs" in granted["scope"]
    # Whatever the scope, the labs do not answer: high and low HbA1c look alike.
    token = str(granted["access_token"])
    assert (await server.get(token, ROBERT)).status_code == 403  # no Patient scope left
    # `$validate` checks its interaction like any other: Basic may not write.
    basic = await server.token("basic-user", "openid fhirUser user/Patient.rs")
    body = {"resourceType": "Patient", "name": [{"family": "Alvarez"}]}
    refused = await server.post(basic, "Patient/$validate", body)
    assert refused.status_code == 403, refused.text
    assert refused.json()["issue"][0]["code"] == "forbidden"
    premium = await server.token("sponsor", "openid fhirUser user/Patient.cruds")
    assert (await server.post(premium, "Patient/$validate", body)).status_code == 200


def _team(subject: str, *members: str) -> dict[str, Any]:
    return {
        "resourceType": "CareTeam",
        "status": "active",
        "subject": {"reference": subject},
        "participant": [{"member": {"reference": m}} for m in members],
    }


async def test_a_self_made_care_team_confers_no_access(server: Server):
    rachel = "Practitioner/pcm-rachel-kim"
    hers = sorted(patients_of_pcm("rachel"))
    assert ROBERT not in hers and SAMUEL not in hers
    kim = await server.token("dr.rachel.kim", "openid fhirUser user/*.cruds")
    made = await server.post(kim, "CareTeam", _team(SAMUEL, rachel, hers[0]))
    assert made.status_code in (201, 403), made.text  # the write rules may refuse it outright
    for url in (SAMUEL, "Condition/cond-samuel-va-ptsd"):
        assert (await server.get(kim, url)).status_code == 404, url
    # A patient naming a nurse on a team for another patient gives the nurse nothing.
    nurse = "rn.jessica.moore"
    stranger = next(p for p in (ROBERT, SAMUEL) if p not in patients_of_nurse("jessica"))
    james = await server.token("sponsor", "openid fhirUser user/*.cruds")
    made = await server.post(
        james, "CareTeam", _team(stranger, SPONSOR, "Practitioner/rn-jessica-moore")
    )
    assert made.status_code in (201, 403), made.text
    token = await server.token(nurse, "openid fhirUser user/*.rs")
    assert (await server.get(token, stranger)).status_code == 404
    # The organisation's own teams still confer access.
    assert (await server.get(kim, hers[0])).status_code == 200


def _members(group: dict[str, Any]) -> set[str]:
    return {m["entity"]["reference"] for m in group.get("member", [])}


async def test_group_members_show_only_as_far_as_the_caller_sees(server: Server):
    token = await server.token("sponsor", "openid fhirUser user/*.rs")
    r = await server.get(token, "Group/group-seed-population")
    assert r.status_code == 200, r.text
    group = r.json()
    shown = _members(group)
    visible = set()
    for m in shown | {"Patient/dependent-emma-carter", SAMUEL, ROBERT}:
        if (await server.get(token, m)).status_code == 200:
            visible.add(m)
    assert SPONSOR in shown and shown == visible
    assert "Patient/dependent-emma-carter" not in shown and "quantity" not in group
    # The same through search, _include and history.
    found = (await server.get(token, "Group", _id="group-seed-population")).json()
    assert _members(found["entry"][0]["resource"]) == shown
    inc = (
        await server.get(token, "Patient", _id="sponsor-james-carter", _revinclude="Group:member")
    ).json()
    groups = [e["resource"] for e in inc["entry"] if e["resource"]["resourceType"] == "Group"]
    assert groups and all(_members(g) <= shown | {SPONSOR} for g in groups)
    versions = (await server.get(token, "Group/group-seed-population/_history")).json()
    assert all(_members(e["resource"]) == shown for e in versions["entry"])


async def test_a_hidden_patients_compartment_answers_as_a_missing_ones(server: Server):
    token = await server.token("sponsor", "openid fhirUser user/*.rs")
    hidden = (await server.get(token, "Patient/dependent-emma-carter/*", _count="100")).json()
    missing = (await server.get(token, "Patient/no-such-patient/*", _count="100")).json()
    assert ids(hidden) == ids(missing) == set()
    assert hidden.get("total") == missing.get("total")
    for rt in ("Group", "Communication"):
        a = (await server.get(token, f"Patient/dependent-emma-carter/{rt}")).json()
        b = (await server.get(token, f"Patient/no-such-patient/{rt}")).json()
        assert ids(a) == ids(b) == set(), rt


async def test_a_reference_search_naming_a_hidden_patient_answers_as_a_missing_one(
    server: Server,
):
    # The family Group and the population Group are the sponsor's to read, but Emma (an
    # adult dependent who granted him nothing) is not: her membership is no search key for
    # him, with or without the type, and the `_has` and conditional paths agree.
    token = await server.token("sponsor", "openid fhirUser user/*.rs")
    emma, nobody = "dependent-emma-carter", "no-such-patient"
    for params in (
        {"member": "Patient/{}"},
        {"member:Patient": "{}"},
        {"member": "Patient/{}", "_id": "group-carter-family"},
        {"member": "Patient/{}", "_summary": "count"},
    ):
        hidden, missing = [
            (await server.get(token, "Group", **{k: v.format(p) for k, v in params.items()})).json()
            for p in (emma, nobody)
        ]
        assert ids(hidden) == ids(missing) == set(), params
        assert hidden.get("total") == missing.get("total") == 0, params
    has = {"_has:Group:member:member": f"Patient/{emma}", "_id": "sponsor-james-carter"}
    assert ids((await server.get(token, "Patient", **has)).json()) == set()
    # Patients he may look into still find their Groups.
    own = ids((await server.get(token, "Group", member=SPONSOR)).json())
    assert "Group/group-carter-family" in own
    teen = ids((await server.get(token, "Group", member=SOPHIA)).json())
    assert "Group/group-carter-family" in teen
    # An unrelated patient learns nothing of the population Group's other members either.
    marcus = await server.token("cac-user", "openid fhirUser user/*.rs")
    for p in (SAMUEL, "Patient/no-such-patient"):
        assert ids((await server.get(marcus, "Group", member=p)).json()) == set(), p
    assert ids((await server.get(marcus, "Group", member=MARCUS)).json())
