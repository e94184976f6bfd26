"""Clinicians see the patients of their care teams; directory types; break-the-glass.

Real SMART tokens (login + consent pages), the seed population loaded. Expectations come
from the seed's declared directory (each person's PCM and clinic, seed_data/directory.py),
not from the server. Membership is FHIR data read per request, so changing a CareTeam or a
PractitionerRole takes effect on the next request with the same token.
https://hl7.org/fhir/R4/careteam.html
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import pytest

from seed_data.clinics import MAINTAINED
from seed_data.directory import CLINIC_NURSE_POOL, NURSE_POOLS, PEOPLE
from tests.integration.access.test_smart_enforcement import Server, ids
from tests.integration.auth.conftest import BASE, authorize, exchange
from tests.integration.seeded import seeded_server

RACHEL = "Practitioner/pcm-rachel-kim"
ROBERT = f"Patient/{PEOPLE['robert'].id}"
JAMES = f"Patient/{PEOPLE['james'].id}"
REASON = "Unconscious patient in the emergency department"


def patients_of_pcm(pcm: str) -> set[str]:
    return {f"Patient/{p.id}" for p in PEOPLE.values() if p.pcm == pcm}


def patients_of_nurse(nurse: str) -> set[str]:
    clinics = {clinic for _, clinic, nurses in NURSE_POOLS.values() if nurse in nurses}
    return {f"Patient/{p.id}" for p in PEOPLE.values() if p.clinic in clinics}


@dataclass
class Env:
    server: Server
    store: Any
    audit: Any
    auth: Any

    async def token(self, username: str, scope: str = "openid fhirUser user/*.rs") -> str:
        return await self.server.token(username, scope)

    async def patients(self, token: str, **headers: str) -> set[str]:
        r = await self.server.http.get(
            "/fhir/Patient",
            params={"_count": "200"},
            headers={"Authorization": f"Bearer {token}", **headers},
        )
        assert r.status_code == 200, r.text
        return {i for i in ids(r.json()) if i.startswith("Patient/")}


@pytest.fixture(scope="module")
async def env(mongo_uri: str) -> AsyncIterator[Env]:
    async with seeded_server(mongo_uri) as (app, http):
        yield Env(Server(http), app.state.ctx.store, app.state.audit, app.state.smart_auth)


async def test_pcm_sees_exactly_the_patients_of_her_care_teams(env: Env):
    token = await env.token("dr.rachel.kim")
    expected = patients_of_pcm("rachel")
    assert expected and ROBERT not in expected
    assert await env.patients(token) == expected
    # Another patient's record answers exactly as a missing one.
    obs = (await env.server.get(token, "Observation", subject=ROBERT)).json()
    assert obs.get("total", 0) == 0 and not obs.get("entry")
    hidden = await env.server.get(token, ROBERT)
    missing = await env.server.get(token, "Patient/no-such-patient")
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["issue"][0]["code"] == missing.json()["issue"][0]["code"]


async def test_nurse_pool_membership_passes_through_nested_care_teams(env: Env):
    token = await env.token("rn.jessica.moore")
    expected = patients_of_nurse("jessica")
    # The nurse is on no patient's team directly: only through the clinic's pool.
    assert CLINIC_NURSE_POOL["family-medicine"] in NURSE_POOLS
    assert expected > patients_of_pcm("rachel")
    assert await env.patients(token) == expected


async def test_directory_types_are_readable_by_confined_tokens(env: Env):
    for username, scope in (
        ("dr.rachel.kim", "openid fhirUser user/*.rs"),
        ("james.carter", "openid fhirUser user/*.rs"),
        ("emma.carter", "openid fhirUser user/Practitioner.rs user/Organization.rs"),
    ):
        token = await env.token(username, scope)
        r = await env.server.get(token, "Practitioner", _count="200")
        found = ids(r.json())
        # Every clinician in the seed, whoever's care team they are on.
        assert {"Practitioner/pcm-rachel-kim", "Practitioner/pcm-laura-chen"} <= found, username
        org = await env.server.get(token, "Organization/lakeside-family-medicine")
        assert org.status_code == 200, (username, org.text)
        # Their versions too: vread and instance history.
        vread = await env.server.get(token, "Organization/lakeside-family-medicine/_history/1")
        assert vread.status_code == 200, (username, vread.text)
        versions = await env.server.get(token, "Practitioner/pcm-rachel-kim/_history")
        assert versions.status_code == 200 and versions.json()["entry"], username


async def test_a_schedule_of_a_patient_is_not_directory_data(env: Env):
    await env.store.update(
        "Schedule",
        "schedule-of-robert",
        {"resourceType": "Schedule", "actor": [{"reference": ROBERT}]},
    )
    sponsor = await env.token("james.carter")
    assert (await env.server.get(sponsor, "Schedule/schedule-pcm-rachel-kim")).status_code == 200
    assert (await env.server.get(sponsor, "Schedule/schedule-of-robert")).status_code == 404
    everything = ids((await env.server.get(sponsor, "Schedule", _count="200")).json())
    assert "Schedule/schedule-pcm-rachel-kim" in everything
    assert "Schedule/schedule-of-robert" not in everything
    # A search across types applies the same rule.
    across = ids((await env.server.get(sponsor, "", _type="Schedule", _count="200")).json())
    assert "Schedule/schedule-pcm-rachel-kim" in across
    assert "Schedule/schedule-of-robert" not in across


async def test_membership_changes_take_effect_on_the_next_request(env: Env):
    token = await env.token("dr.rachel.kim")
    team_id = "careteam-james-carter"
    team = (await env.store.current("CareTeam", team_id))["res"]
    # The organisation's mark stays on every version (clinicians.json).
    original = {**{k: v for k, v in team.items() if k != "meta"}, "meta": {"tag": [MAINTAINED]}}
    assert JAMES in await env.patients(token)
    without = {
        **original,
        "participant": [p for p in original["participant"] if p["member"]["reference"] != RACHEL],
    }
    await env.store.update("CareTeam", team_id, without)
    try:
        assert JAMES not in await env.patients(token)
        # A participation whose period has ended does not count either.
        ended = {
            **original,
            "participant": [
                {**p, "period": {"end": "2001-01-01"}} if p["member"]["reference"] == RACHEL else p
                for p in original["participant"]
            ],
        }
        await env.store.update("CareTeam", team_id, ended)
        assert JAMES not in await env.patients(token)
        inactive = {**original, "status": "inactive"}
        await env.store.update("CareTeam", team_id, inactive)
        assert JAMES not in await env.patients(token)
    finally:
        await env.store.update("CareTeam", team_id, original)
    assert JAMES in await env.patients(token)


async def test_membership_through_a_practitioner_role(env: Env):
    token = await env.token("dr.rachel.kim")
    assert ROBERT not in await env.patients(token)
    role = {
        "resourceType": "PractitionerRole",
        "active": True,
        "practitioner": {"reference": RACHEL},
        "code": [{"text": "Consulting physician"}],
    }
    await env.store.update("PractitionerRole", "role-rachel-consult", role)
    await env.store.update(
        "CareTeam",
        "careteam-robert-consult",
        {
            "resourceType": "CareTeam",
            # Written by the organisation's loader: a team it maintains (clinicians.json).
            "meta": {"tag": [MAINTAINED]},
            "status": "active",
            "subject": {"reference": ROBERT},
            "participant": [{"member": {"reference": "PractitionerRole/role-rachel-consult"}}],
        },
    )
    assert ROBERT in await env.patients(token)
    await env.store.update("PractitionerRole", "role-rachel-consult", {**role, "active": False})
    assert ROBERT not in await env.patients(token)


async def test_break_the_glass_reaches_beyond_the_care_team_and_is_audited(env: Env):
    token = await env.token("dr.rachel.kim")
    r = await env.server.http.get(
        f"/fhir/{ROBERT}",
        headers={"Authorization": f"Bearer {token}", "X-Break-Glass-Reason": REASON},
    )
    assert r.status_code == 200, r.text
    assert ROBERT in await env.patients(token, **{"X-Break-Glass-Reason": REASON})
    # Without the header the confinement is back.
    assert (await env.server.get(token, ROBERT)).status_code == 404
    await env.audit.flush()
    events = env.store.db["audit"].find({"rt": "AuditEvent"}, {"res": 1})
    glass = [
        d["res"]
        async for d in events
        if any(
            c.get("code") == "BTG"
            for p in d["res"].get("purposeOfEvent", [])
            for c in p.get("coding", [])
        )
    ]
    assert glass, "each break-the-glass request writes an AuditEvent with purpose BTG"
    assert all(p.get("text") == REASON for e in glass for p in e["purposeOfEvent"])
    assert any(e.get("entity", [{}])[0].get("what", {}).get("reference") for e in glass)


async def test_break_the_glass_needs_a_reason_and_a_clinician(env: Env):
    token = await env.token("dr.rachel.kim")
    for empty in ("   why ", "." * 10, "\u200b" * 12, "why\u200b" * 4, "- - - - - - - - - - -"):
        short = await env.server.http.get(
            f"/fhir/{ROBERT}",
            headers={"Authorization": f"Bearer {token}", "X-Break-Glass-Reason": empty.encode()},
        )
        assert short.status_code == 400, repr(empty)
        assert short.json()["issue"][0]["code"] == "value"
    patient = await env.token("james.carter")
    refused = await env.server.http.get(
        f"/fhir/{ROBERT}",
        headers={"Authorization": f"Bearer {patient}", "X-Break-Glass-Reason": REASON},
    )
    assert refused.status_code == 403
    assert refused.json()["issue"][0]["code"] == "forbidden"


async def test_ehr_launch_outside_the_care_team_sees_nothing(env: Env):
    async def launched(patient: str) -> str:
        launch = await anyio.to_thread.run_sync(
            lambda: env.auth.launches.create(patient=patient.split("/")[1])
        )
        async with httpx.AsyncClient(transport=env.server.http._transport, base_url=BASE) as b:
            auth = await authorize(
                b, "dr.rachel.kim", "launch openid fhirUser patient/*.rs", launch=launch
            )
            r = await exchange(b, auth)
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])

    inside = await launched(JAMES)
    assert (await env.server.get(inside, JAMES)).status_code == 200
    outside = await launched(ROBERT)
    assert (await env.server.get(outside, ROBERT)).status_code == 404
    obs = (await env.server.get(outside, "Observation", _count="50")).json()
    assert not obs.get("entry")
