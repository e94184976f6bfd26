"""Leak paths of the pre-visit clipboards (portal/clipboards.py).

- The adolescent's clipboard Tasks (a confidential visit's, labelled as the booking labels
  it, and an ordinary one: the adolescent band of profiles/access/family.json has no Task
  and no QuestionnaireResponse) and her answers never reach a parent: reads answer as for
  what does not exist, searches leave them out, and a parent can neither answer for her
  nor overwrite her answers, nor so move her Task.
- Patient A (the CAC user) neither sees nor answers patient B's (the sponsor's) clipboard,
  and A's own answers to the same Questionnaire leave B's Task alone.

The backend service's `system/*.rs` token is the positive control.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from joserfc.jwk import RSAKey

from tests.integration.access.test_leak_matrix import PATIENT, TABLE, _same_as_missing
from tests.integration.access.test_smart_enforcement import Server, ids
from tests.integration.auth.conftest import BACKEND
from tests.integration.auth.test_backend_services import assertion, request_token
from tests.integration.portal.test_clipboards import SEARCH_CODE, USER, answers, clipboard_task
from tests.integration.seeded import seeded_server

TEEN = f"Patient/{PATIENT['sophia']}"
JAMES = "Patient/sponsor-james-carter"
MARCUS = "Patient/cac-marcus-bell"
CONFIDENTIAL = [
    {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"},
    {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "SEX"},
]


@dataclass
class Env:
    server: Server
    tok: dict[str, str]
    teen_tasks: list[str]
    teen_answers: str
    james_task: str
    james_answers: str

    async def send(self, who: str, method: str, url: str, body: dict[str, Any]) -> httpx.Response:
        return await self.server.http.request(
            method,
            f"/fhir/{url}",
            json=body,
            headers={
                "Authorization": f"Bearer {self.tok[who]}",
                "Content-Type": "application/fhir+json",
            },
        )

    async def status_of(self, url: str) -> str:
        r = await self.server.get(self.tok["backend"], url)
        assert r.status_code == 200, r.text
        return str(r.json()["status"])


async def _created(r: httpx.Response) -> str:
    assert r.status_code == 201, r.text
    return f"{r.json()['resourceType']}/{r.json()['id']}"


@pytest.fixture(scope="module")
async def env(mongo_uri: str) -> AsyncIterator[Env]:
    async with seeded_server(mongo_uri) as (_, http):
        server = Server(http)
        key = RSAKey.import_key(BACKEND["jwk"])
        r = await request_token(server, assertion(key, BACKEND["client_id"], "RS384"))
        assert r.status_code == 200, r.text
        tok = {"backend": r.json()["access_token"]}
        for role in ("sponsor", "spouse", "cac-user", "practitioner"):
            tok[role] = await server.token(role, USER)
        e = Env(server, tok, [], "", "", "")
        confidential = {**clipboard_task(TEEN), "meta": {"security": CONFIDENTIAL}}
        for task in (confidential, clipboard_task(TEEN)):
            e.teen_tasks.append(await _created(await e.send("practitioner", "POST", "Task", task)))
        teen = {**answers(TEEN, "in-progress"), "meta": {"security": CONFIDENTIAL}}
        e.teen_answers = await _created(
            await e.send("practitioner", "POST", "QuestionnaireResponse", teen)
        )
        e.james_task = await _created(
            await e.send("practitioner", "POST", "Task", clipboard_task(JAMES))
        )
        e.james_answers = await _created(
            await e.send("sponsor", "POST", "QuestionnaireResponse", answers(JAMES, "in-progress"))
        )
        yield e


async def _hidden(env: Env, who: str, url: str) -> None:
    token = env.tok[who]
    rt = url.split("/")[0]
    assert (await env.server.get(env.tok["backend"], url)).status_code == 200
    _same_as_missing(await env.server.get(token, url), await env.server.get(token, f"{rt}/no-such"))
    _same_as_missing(
        await env.server.get(token, f"{url}/_history"),
        await env.server.get(token, f"{rt}/no-such/_history"),
    )


async def _found(env: Env, who: str, rt: str, **params: str) -> set[str]:
    r = await env.server.get(env.tok[who], rt, **params)
    assert r.status_code == 200, r.text
    return ids(r.json())


async def test_a_parent_learns_nothing_of_the_adolescents_clipboard(env: Env) -> None:
    band = TABLE["bands"]["adolescent"]["types"]
    assert "Task" not in band and "QuestionnaireResponse" not in band
    for parent in ("sponsor", "spouse"):
        for url in (*env.teen_tasks, env.teen_answers):
            await _hidden(env, parent, url)
        searches = [
            ("Task", {"code": SEARCH_CODE, "_count": "200"}),
            ("Task", {"code": SEARCH_CODE, "status": "requested"}),
            ("Task", {"patient": TEEN}),
            ("Task", {"focus": "Questionnaire/previsit-clipboard"}),
            ("QuestionnaireResponse", {"subject": TEEN}),
            ("QuestionnaireResponse", {"questionnaire": answers(TEEN, "x")["questionnaire"]}),
            ("Patient", {"_id": PATIENT["sophia"], "_revinclude": "QuestionnaireResponse:subject"}),
            ("Patient", {"_id": PATIENT["sophia"], "_revinclude": "Task:patient"}),
        ]
        for rt, params in searches:
            found = await _found(env, parent, rt, **params)
            assert not found & {*env.teen_tasks, env.teen_answers}, (parent, rt, params)
        count = await env.server.get(
            env.tok[parent], "QuestionnaireResponse", subject=TEEN, _summary="count"
        )
        assert count.json().get("total", 0) == 0
        # Answering for her is refused exactly as answering a Questionnaire no Task asks
        # for, and overwriting her answers exactly as writing answers that do not exist.
        mine = await env.send(parent, "POST", "QuestionnaireResponse", answers(TEEN, "completed"))
        other = {**answers(TEEN, "completed"), "questionnaire": "Questionnaire/phq-2", "item": []}
        control = await env.send(parent, "POST", "QuestionnaireResponse", other)
        assert mine.status_code in (403, 404) and mine.status_code == control.status_code
        _same_as_missing(mine, control)
        rid = env.teen_answers.split("/")[1]
        put = await env.send(
            parent,
            "PUT",
            env.teen_answers,
            {**answers(TEEN, "completed"), "id": rid},
        )
        nothing = await env.send(
            parent,
            "PUT",
            "QuestionnaireResponse/no-such",
            {**answers(TEEN, "completed"), "id": "no-such"},
        )
        _same_as_missing(put, nothing)
    # Her clinician's draft moved her Tasks on; no parent's write completed them.
    for task in env.teen_tasks:
        assert await env.status_of(task) == "in-progress"
    assert await env.status_of(env.teen_answers) == "in-progress"


async def test_one_patient_neither_sees_nor_answers_anothers_clipboard(env: Env) -> None:
    for url in (env.james_task, env.james_answers):
        await _hidden(env, "cac-user", url)
    assert env.james_task not in await _found(env, "cac-user", "Task", code=SEARCH_CODE)
    assert env.james_task in await _found(env, "sponsor", "Task", code=SEARCH_CODE)
    r = await env.send("cac-user", "POST", "QuestionnaireResponse", answers(JAMES, "completed"))
    assert r.status_code in (403, 404), r.text
    rid = env.james_answers.split("/")[1]
    put = await env.send(
        "cac-user", "PUT", env.james_answers, {**answers(MARCUS, "completed"), "id": rid}
    )
    nothing = await env.send(
        "cac-user",
        "PUT",
        "QuestionnaireResponse/no-such",
        {**answers(MARCUS, "completed"), "id": "no-such"},
    )
    _same_as_missing(put, nothing)
    # His own answers to the same Questionnaire move no Task of someone else's.
    r = await env.send("cac-user", "POST", "QuestionnaireResponse", answers(MARCUS, "completed"))
    assert r.status_code == 201, r.text
    assert await env.status_of(env.james_task) == "in-progress"
    assert await env.status_of(env.james_answers) == "in-progress"
