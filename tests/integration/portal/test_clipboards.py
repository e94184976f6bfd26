"""Pre-visit clipboards end to end over HTTP with real SMART tokens (issue 13 item 7).

A clinician puts clipboard Tasks (as the booking workflow would; the backend service, which
reads only, checks them) (the contract's: code
complete-questionnaire, `for` and `owner` the patient, `focus` the seed's
Questionnaire/previsit-clipboard) on the sponsor's and on his child's record; the sponsor
finds them with a plain Task search, saves his answers in progress and then completed, and
each save moves the Task in the write's transaction; a completed response that does not fit
the Questionnaire is a 422 naming the linkId; the child's answers record the sponsor's
RelatedPerson as their author, apart from the subject.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from joserfc.jwk import RSAKey

from fhir_server.portal.clipboards import load_table
from seed_data.common import SNOMED
from seed_data.directory import related_person_id
from seed_data.documents import PREVISIT_URL, TOBACCO
from tests.integration.access.test_smart_enforcement import Server, ids
from tests.integration.auth.conftest import BACKEND
from tests.integration.auth.test_backend_services import assertion, request_token
from tests.integration.seeded import seeded_server

JAMES = "Patient/sponsor-james-carter"
LIAM = "Patient/child-liam-carter"
QUESTIONNAIRE = "Questionnaire/previsit-clipboard"
CODE = load_table().code
SEARCH_CODE = f"{CODE['system']}|{CODE['code']}"
USER = "openid fhirUser user/*.cruds"


@dataclass
class Env:
    server: Server
    tok: dict[str, str]

    async def send(self, who: str, method: str, url: str, body: dict[str, Any]) -> Any:
        return await self.server.http.request(
            method,
            f"/fhir/{url}",
            json=body,
            headers={
                "Authorization": f"Bearer {self.tok[who]}",
                "Content-Type": "application/fhir+json",
            },
        )

    async def read(self, url: str) -> dict[str, Any]:
        r = await self.server.get(self.tok["backend"], url)
        assert r.status_code == 200, r.text
        return dict(r.json())


def clipboard_task(patient: str) -> dict[str, Any]:
    return {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "code": {"coding": [CODE]},
        "for": {"reference": patient},
        "owner": {"reference": patient},
        "focus": {"reference": QUESTIONNAIRE},
        "executionPeriod": {"end": "2099-01-05T09:00:00-05:00"},
    }


def answers(patient: str, status: str, *, tobacco: str = TOBACCO[0][0]) -> dict[str, Any]:
    return {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": PREVISIT_URL,
        "status": status,
        "subject": {"reference": patient},
        "item": [
            {"linkId": "reason", "answer": [{"valueString": "sore knee"}]},
            {"linkId": "medications-changed", "answer": [{"valueBoolean": False}]},
            {"linkId": "tobacco", "answer": [{"valueCoding": {"system": SNOMED, "code": tobacco}}]},
        ],
    }


@pytest.fixture(scope="module")
async def env(mongo_uri: str) -> AsyncIterator[Env]:
    async with seeded_server(mongo_uri) as (_, http):
        server = Server(http)
        key = RSAKey.import_key(BACKEND["jwk"])
        r = await request_token(server, assertion(key, BACKEND["client_id"], "RS384"))
        assert r.status_code == 200, r.text
        tok = {"backend": r.json()["access_token"]}
        tok["sponsor"] = await server.token("sponsor", USER)
        tok["sponsor-patient"] = await server.token(
            "sponsor", "launch/patient patient/*.cruds", patient=JAMES
        )
        tok["clinician"] = await server.token("practitioner", USER)
        tok["managed"] = await server.token("managed-account", USER)
        yield Env(server, tok)


async def test_the_patient_completes_a_clipboard(env: Env) -> None:
    r = await env.send("clinician", "POST", "Task", clipboard_task(JAMES))
    assert r.status_code == 201, r.text
    task = f"Task/{r.json()['id']}"
    # The patient finds it with a plain search, with a user token and a patient token.
    for who in ("sponsor", "sponsor-patient"):
        r = await env.server.get(env.tok[who], "Task", code=SEARCH_CODE, status="requested")
        assert r.status_code == 200, r.text
        assert task in ids(r.json()), who

    r = await env.send("sponsor", "POST", "QuestionnaireResponse", answers(JAMES, "in-progress"))
    assert r.status_code == 201, r.text
    qr = r.json()
    assert qr["author"] == {"reference": JAMES} and qr["source"] == {"reference": JAMES}
    assert (await env.read(task))["status"] == "in-progress"

    # A completed response that does not fit: 422 naming the linkId; nothing moves.
    bad = {**answers(JAMES, "completed", tobacco="no-such-code"), "id": qr["id"]}
    r = await env.send("sponsor", "PUT", f"QuestionnaireResponse/{qr['id']}", bad)
    assert r.status_code == 422, r.text
    (issue,) = r.json()["issue"]
    assert issue["code"] == "value"
    assert issue["expression"] == [
        "QuestionnaireResponse.item[2].answer[0]",
        "QuestionnaireResponse.item.where(linkId='tobacco').answer",
    ]
    missing = {**answers(JAMES, "completed"), "id": qr["id"]}
    missing["item"] = missing["item"][:1]
    r = await env.send("sponsor", "PUT", f"QuestionnaireResponse/{qr['id']}", missing)
    assert r.status_code == 422, r.text
    assert r.json()["issue"][0]["code"] == "required"
    assert "QuestionnaireResponse.item.where(linkId='medications-changed')" in str(r.json())
    stored = await env.read(f"QuestionnaireResponse/{qr['id']}")
    assert stored["status"] == "in-progress" and stored["meta"]["versionId"] == "1"
    assert (await env.read(task))["status"] == "in-progress"

    done = {**answers(JAMES, "completed"), "id": qr["id"]}
    r = await env.send("sponsor", "PUT", f"QuestionnaireResponse/{qr['id']}", done)
    assert r.status_code == 200, r.text
    t = await env.read(task)
    assert t["status"] == "completed"
    assert t["output"][-1]["valueReference"] == {"reference": f"QuestionnaireResponse/{qr['id']}"}
    assert t["executionPeriod"]["end"] == "2099-01-05T09:00:00-05:00"
    r = await env.server.get(env.tok["sponsor"], "Task", code=SEARCH_CODE, status="requested")
    assert task not in ids(r.json())


async def test_a_parent_answers_for_a_child_as_their_related_person(env: Env) -> None:
    r = await env.send("clinician", "POST", "Task", clipboard_task(LIAM))
    assert r.status_code == 201, r.text
    task = f"Task/{r.json()['id']}"
    r = await env.server.get(env.tok["sponsor"], "Task", code=SEARCH_CODE, status="requested")
    assert task in ids(r.json())
    r = await env.send("sponsor", "POST", "QuestionnaireResponse", answers(LIAM, "completed"))
    assert r.status_code == 201, r.text
    qr = r.json()
    proxy = {"reference": f"RelatedPerson/{related_person_id('james', 'liam')}"}
    assert qr["subject"] == {"reference": LIAM}
    assert qr["author"] == proxy and qr["source"] == proxy
    t = await env.read(task)
    assert t["status"] == "completed"
    assert t["output"][-1]["valueReference"]["reference"] == f"QuestionnaireResponse/{qr['id']}"
    # The child's answers are the child's: not in the parent's own compartment.
    r = await env.server.get(env.tok["backend"], "QuestionnaireResponse", patient=JAMES)
    assert f"QuestionnaireResponse/{qr['id']}" not in ids(r.json())
    # The parent can amend them later, as the author he is recorded as.
    r = await env.send(
        "sponsor",
        "PUT",
        f"QuestionnaireResponse/{qr['id']}",
        {**qr, "status": "amended"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["author"] == proxy


async def test_an_unknown_questionnaire_is_refused(env: Env) -> None:
    body = {**answers(JAMES, "completed"), "questionnaire": "https://example.org/Questionnaire/x"}
    r = await env.send("sponsor", "POST", "QuestionnaireResponse", body)
    assert r.status_code == 422, r.text
    assert r.json()["issue"][0]["expression"] == ["QuestionnaireResponse.questionnaire"]
    # A version the server does not hold is unknown too.
    body = {**answers(JAMES, "completed"), "questionnaire": f"{PREVISIT_URL}|9.9"}
    r = await env.send("sponsor", "POST", "QuestionnaireResponse", body)
    assert r.status_code == 422, r.text
    body = {**answers(JAMES, "completed"), "questionnaire": f"{PREVISIT_URL}|1.0.0"}
    r = await env.send("sponsor", "POST", "QuestionnaireResponse", body)
    assert r.status_code == 201, r.text


async def test_a_managed_accounts_answers_name_its_appointee(env: Env) -> None:
    eleanor = "Patient/managed-eleanor-brooks"
    r = await env.send("managed", "POST", "QuestionnaireResponse", answers(eleanor, "in-progress"))
    assert r.status_code == 201, r.text
    appointee = {"reference": f"RelatedPerson/{related_person_id('susan', 'eleanor')}"}
    assert r.json()["subject"] == {"reference": eleanor}
    assert r.json()["author"] == appointee and r.json()["source"] == appointee
