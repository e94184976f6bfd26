"""The write rules over HTTP with real SMART tokens: each reproduction of the issue on the
write path (profiles/access/writes.json, docs/access.md "Writes"). Every refused write is
read back with a backend token to prove nothing changed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from joserfc.jwk import RSAKey

from tests.integration.access.test_smart_enforcement import Server
from tests.integration.auth.conftest import BACKEND
from tests.integration.auth.test_backend_services import assertion, request_token
from tests.integration.seeded import seeded_server

USER = "openid fhirUser user/*.cruds"
JAMES = "Patient/sponsor-james-carter"
SOPHIA = "Patient/adolescent-sophia-carter"
EMMA = "Patient/dependent-emma-carter"
KIM = "Practitioner/pcm-rachel-kim"
OBS_CAT = "http://terminology.hl7.org/CodeSystem/observation-category"
FHIR_JSON = "application/fhir+json"


@dataclass
class W:
    s: Server
    tokens: dict[str, str]

    def headers(self, who: str, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}", "Content-Type": FHIR_JSON, **extra}

    async def send(self, who: str, method: str, url: str, body: Any = None, **h: str) -> Any:
        return await self.s.http.request(
            method, f"/fhir/{url}", headers=self.headers(who, **h), content=orjson.dumps(body)
        )

    async def backend(self, url: str) -> httpx.Response:
        return await self.s.get(self.tokens["backend"], url)


@pytest.fixture(scope="module")
async def w(mongo_uri: str) -> AsyncIterator[W]:
    async with seeded_server(mongo_uri) as (_, http):
        s = Server(http)
        key = RSAKey.import_key(BACKEND["jwk"])
        r = await request_token(s, assertion(key, BACKEND["client_id"], "RS384"))
        assert r.status_code == 200, r.text
        tokens = {"backend": r.json()["access_token"]}
        for role in ("sponsor", "adult-dependent-no-grant", "basic-user", "dr.rachel.kim"):
            tokens[role] = await s.token(role, USER)
        yield W(s, tokens)


def issue(r: httpx.Response) -> dict[str, Any]:
    assert r.headers["content-type"].startswith(FHIR_JSON), r.headers
    return dict(r.json()["issue"][0])


async def test_a_proxy_never_changes_what_the_policy_keys_on(w: W) -> None:
    before = (await w.backend(SOPHIA)).json()
    older = {**before, "birthDate": "2020-01-01"}
    r = await w.send("sponsor", "PUT", SOPHIA, older)
    assert r.status_code == 422, r.text
    assert issue(r)["code"] == "business-rule"
    assert "Patient.birthDate" in issue(r)["expression"]
    patch = [{"op": "replace", "path": "/birthDate", "value": "2019"}]
    r = await w.send(
        "sponsor", "PATCH", SOPHIA, patch, **{"Content-Type": "application/json-patch+json"}
    )
    assert r.status_code == 422, r.text
    after = (await w.backend(SOPHIA)).json()
    assert after["birthDate"] == before["birthDate"]
    assert after["meta"]["versionId"] == before["meta"]["versionId"]
    # Her care-team messages and conditions stay hidden from him.
    for hidden in ("Communication/msg-sophia-followup-1", "Condition/cond-sophia-asthma"):
        assert (await w.s.get(w.tokens["sponsor"], hidden)).status_code == 404
    # Her demographics other than those he may keep up to date.
    moved = {**before, "telecom": [{"system": "phone", "value": "555-0100"}]}
    r = await w.send("sponsor", "PUT", SOPHIA, moved)
    assert r.status_code == 200, r.text


async def test_a_proxy_cannot_write_into_a_record_it_does_not_hold(w: W) -> None:
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": OBS_CAT, "code": "activity"}]}],
        "code": {"text": "steps"},
        "subject": {"reference": EMMA},
        "performer": [{"reference": JAMES}],
    }
    r = await w.send("sponsor", "POST", "Observation", obs)
    assert r.status_code == 403, r.text
    found = (await w.backend(f"Observation?subject={EMMA}&_count=200")).json()
    assert all(e["resource"]["code"].get("text") != "steps" for e in found["entry"])
    # His own, with the performer filled in from the token when left out.
    mine = {**obs, "subject": {"reference": JAMES}}
    del mine["performer"]
    r = await w.send("sponsor", "POST", "Observation", mine)
    assert r.status_code == 201, r.text
    assert r.json()["performer"] == [{"reference": JAMES}]
    # A laboratory result is the clinic's, even in his own record.
    lab = {**mine, "category": [{"coding": [{"system": OBS_CAT, "code": "laboratory"}]}]}
    r = await w.send("sponsor", "POST", "Observation", lab)
    assert r.status_code == 422 and issue(r)["code"] == "business-rule", r.text


async def test_patients_and_proxies_never_delete(w: W) -> None:
    targets = [
        ("sponsor", "Slot/slot-rachel-wd01-1400"),
        ("sponsor", "Practitioner/pcm-rachel-kim"),
        ("sponsor", "Questionnaire/previsit-clipboard"),
        ("sponsor", "Immunization/imm-sophia-hpv"),
        ("sponsor", "Consent/consent-daniel-proxy-james"),
        ("adult-dependent-no-grant", "Group/group-carter-family"),
    ]
    for who, ref in targets:
        r = await w.send(who, "DELETE", ref)
        assert r.status_code == 403, (ref, r.text)
        assert issue(r)["code"] == "forbidden"
        assert (await w.backend(ref)).status_code == 200, ref
    # Conditional delete and a transaction entry go the same way.
    r = await w.send("sponsor", "DELETE", "Slot?_id=slot-rachel-wd01-1400")
    assert r.status_code == 403, r.text
    tx = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "DELETE", "url": "Immunization/imm-sophia-hpv"}}],
    }
    r = await w.send("sponsor", "POST", "", tx)
    assert r.status_code == 403, r.text
    assert (await w.backend("Immunization/imm-sophia-hpv")).status_code == 200


async def test_a_patient_cannot_write_as_someone_else(w: W) -> None:
    team = "CareTeam/careteam-james-carter"
    # A message belongs to a thread (docs/portal.md): its header first.
    thread = {
        "resourceType": "Communication",
        "status": "in-progress",
        "category": [
            {
                "coding": [
                    {
                        "system": "https://mhs.example.org/fhir/CodeSystem/message-category",
                        "code": "administrative",
                    }
                ]
            }
        ],
        "topic": {"text": "hello"},
        "subject": {"reference": JAMES},
        "recipient": [{"reference": team}],
    }
    r = await w.send("sponsor", "POST", "Communication", thread)
    assert r.status_code == 201, r.text
    msg = {
        "resourceType": "Communication",
        "status": "completed",
        "partOf": [{"reference": f"Communication/{r.json()['id']}"}],
        "subject": {"reference": JAMES},
        "recipient": [{"reference": team}],
        "payload": [{"contentString": "hello"}],
    }
    forged = {**msg, "sender": {"reference": KIM}}
    r = await w.send("sponsor", "POST", "Communication", forged)
    assert r.status_code == 422, r.text
    assert issue(r)["code"] == "business-rule"
    assert issue(r)["expression"] == ["Communication.sender"]
    nowhere = {**msg, "recipient": [{"reference": "CareTeam/no-such-team"}]}
    r = await w.send("sponsor", "POST", "Communication", nowhere)
    assert r.status_code == 422, r.text
    assert issue(r)["expression"] == ["Communication.recipient[0]"]
    foreign = {**msg, "recipient": [{"reference": "CareTeam/careteam-samuel-ortiz"}]}
    assert (await w.send("sponsor", "POST", "Communication", foreign)).status_code == 422
    r = await w.send("sponsor", "POST", "Communication", msg)
    assert r.status_code == 201, r.text
    assert r.json()["sender"] == {"reference": JAMES}
    order = {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {"text": "oxycodone"},
        "subject": {"reference": JAMES},
        "requester": {"reference": KIM},
    }
    r = await w.send("sponsor", "POST", "MedicationRequest", order)
    assert r.status_code == 422, r.text
    proposal = {**order, "intent": "proposal"}
    r = await w.send("sponsor", "POST", "MedicationRequest", proposal)
    assert r.status_code == 422 and issue(r)["expression"] == ["MedicationRequest.requester"]
    del proposal["requester"]
    r = await w.send("sponsor", "POST", "MedicationRequest", proposal)
    assert r.status_code == 201, r.text
    assert r.json()["requester"] == {"reference": JAMES}
    found = (await w.backend(f"Communication?subject={JAMES}&_count=200")).json()
    assert not [
        e
        for e in found["entry"]
        if e["resource"].get("sender") == {"reference": KIM}
        and e["resource"].get("payload", [{}])[0].get("contentString") == "hello"
    ]


async def test_answers_must_match_their_questionnaire(w: W) -> None:
    # A draft: a completed one must answer every required item (portal/clipboards.py).
    qr = {
        "resourceType": "QuestionnaireResponse",
        "status": "in-progress",
        "questionnaire": "https://mhs.example.org/fhir/Questionnaire/previsit-clipboard",
        "subject": {"reference": JAMES},
        "item": [{"linkId": "reason", "answer": [{"valueString": "check-up"}]}],
    }
    r = await w.send("sponsor", "POST", "QuestionnaireResponse", qr)
    assert r.status_code == 201, r.text
    assert r.json()["author"] == {"reference": JAMES}
    made_up = {**qr, "item": [{"linkId": "no-such-question", "answer": [{"valueString": "x"}]}]}
    r = await w.send("sponsor", "POST", "QuestionnaireResponse", made_up)
    assert r.status_code == 422, r.text
    assert issue(r)["expression"][0] == "QuestionnaireResponse.item[0]"
    unknown = {**qr, "questionnaire": "https://mhs.example.org/fhir/Questionnaire/nope"}
    r = await w.send("sponsor", "POST", "QuestionnaireResponse", unknown)
    assert r.status_code == 422, r.text


async def test_a_self_made_care_team_is_refused(w: W) -> None:
    team = {
        "resourceType": "CareTeam",
        "status": "active",
        "subject": {"reference": "Patient/retiree-robert-alvarez"},
        "participant": [{"member": {"reference": KIM}}, {"member": {"reference": JAMES}}],
    }
    r = await w.send("dr.rachel.kim", "POST", "CareTeam", team)
    assert r.status_code == 403, r.text
    mine = {**team, "subject": {"reference": JAMES}}
    r = await w.send("sponsor", "POST", "CareTeam", mine)
    assert r.status_code == 403, r.text
    found = (await w.backend("CareTeam?_count=200")).json()
    assert not [e for e in found["entry"] if JAMES in str(e["resource"].get("participant"))]
    # Dr. Kim still records care within her teams.
    note = {
        "resourceType": "Condition",
        "subject": {"reference": JAMES},
        "code": {"text": "seasonal allergies"},
    }
    r = await w.send("dr.rachel.kim", "POST", "Condition", note)
    assert r.status_code == 201, r.text
    assert r.json()["recorder"] == {"reference": KIM}
    r = await w.send(
        "dr.rachel.kim",
        "POST",
        "Condition",
        {**note, "subject": {"reference": "Patient/retiree-robert-alvarez"}},
    )
    assert r.status_code == 403, r.text


async def test_only_the_grantor_changes_a_grant(w: W) -> None:
    grant = "Consent/consent-daniel-proxy-james"
    before = (await w.backend(grant)).json()
    forever = {
        **before,
        "provision": {
            **before["provision"],
            "period": {"start": "2026-01-01", "end": "2999-12-31"},
        },
    }
    r = await w.send("sponsor", "PUT", grant, forever)
    assert r.status_code == 403, r.text
    after = (await w.backend(grant)).json()
    assert after["meta"]["versionId"] == before["meta"]["versionId"]


async def test_a_basic_login_gets_no_create_through_if_none_exist(w: W) -> None:
    imm = {
        "resourceType": "Immunization",
        "status": "completed",
        "vaccineCode": {"text": "flu"},
        "patient": {"reference": "Patient/retiree-robert-alvarez"},
        "occurrenceDateTime": "2025-10-01",
    }
    tx = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": imm,
                "request": {
                    "method": "POST",
                    "url": "Immunization",
                    "ifNoneExist": "_id=imm-robert-zoster",
                },
            }
        ],
    }
    r = await w.send("basic-user", "POST", "", tx)
    assert r.status_code == 403, r.text


async def test_update_as_create_stays_404_for_a_patient_token(w: W) -> None:
    appt = {
        "resourceType": "Appointment",
        "id": "appt-made-up-by-james",
        "status": "proposed",
        "participant": [{"actor": {"reference": JAMES}, "status": "needs-action"}],
    }
    r = await w.send("sponsor", "PUT", "Appointment/appt-made-up-by-james", appt)
    assert r.status_code == 404, r.text  # docs/access.md, "Writes": hidden and missing agree
    # The same resource created with POST works.
    post = {k: v for k, v in appt.items() if k != "id"}
    assert (await w.send("sponsor", "POST", "Appointment", post)).status_code == 201


async def test_a_contained_resource_is_checked_as_the_resource_itself(w: W) -> None:
    # A message carrying a contained Observation "performed by" Dr. Kim, or about another
    # patient, claims what a top-level one would: the same bound and reference rules apply.
    team = "CareTeam/careteam-james-carter"
    thread = {
        "resourceType": "Communication",
        "status": "in-progress",
        "category": [
            {
                "coding": [
                    {
                        "system": "https://mhs.example.org/fhir/CodeSystem/message-category",
                        "code": "administrative",
                    }
                ]
            }
        ],
        "topic": {"text": "contained"},
        "subject": {"reference": JAMES},
        "recipient": [{"reference": team}],
    }
    r = await w.send("sponsor", "POST", "Communication", thread)
    assert r.status_code == 201, r.text
    result = {
        "resourceType": "Observation",
        "id": "o",
        "status": "final",
        "code": {"text": "contained probe"},
        "subject": {"reference": JAMES},
        "performer": [{"reference": JAMES}],
    }

    def message(inner: dict[str, Any]) -> dict[str, Any]:
        return {
            "resourceType": "Communication",
            "status": "completed",
            "partOf": [{"reference": f"Communication/{r.json()['id']}"}],
            "subject": {"reference": JAMES},
            "recipient": [{"reference": team}],
            "contained": [inner],
            "payload": [{"contentReference": {"reference": "#o"}}],
        }

    forged = await w.send(
        "sponsor", "POST", "Communication", message({**result, "performer": [{"reference": KIM}]})
    )
    assert forged.status_code == 422, forged.text
    assert issue(forged)["expression"] == ["Communication.contained[0].performer"]
    foreign = await w.send(
        "sponsor", "POST", "Communication", message({**result, "subject": {"reference": EMMA}})
    )
    assert foreign.status_code == 422, foreign.text
    assert issue(foreign)["expression"] == ["Communication.contained[0].subject"]
    found = (await w.backend(f"Communication?subject={JAMES}&_count=200")).json()
    assert not [e for e in found["entry"] if "contained probe" in str(e["resource"])]
    # His own reading, his own name on it: accepted.
    ok = await w.send("sponsor", "POST", "Communication", message(result))
    assert ok.status_code == 201, ok.text
