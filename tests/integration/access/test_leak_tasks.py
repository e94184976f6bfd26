"""Leak paths of the response-time Tasks: an adolescent's Tasks never reach a parent.

A Task tracks a message, so it tells that the message exists: for the adolescent's parents
(the adolescent band of profiles/access/family.json, whose types do not include Task) every
path answers exactly as for a Task that does not exist. The backend service's `system/*.rs`
token is the positive control (the Task is there). Actors and facts from the leak matrix.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from joserfc.jwk import RSAKey

from tests.integration.access.test_leak_matrix import PATIENT, TABLE, _same_as_missing
from tests.integration.access.test_smart_enforcement import Server, ids
from tests.integration.auth.conftest import BACKEND
from tests.integration.auth.test_backend_services import assertion, request_token
from tests.integration.seeded import seeded_server

TEEN = f"Patient/{PATIENT['sophia']}"
TASK = "Task/task-respond-msg-sophia-followup-1"
MESSAGE = "Communication/msg-sophia-followup-1"
CODE = "https://mhs.example.org/fhir/CodeSystem/portal-task|respond-to-message"


@pytest.fixture(scope="module")
async def tokens(mongo_uri: str) -> AsyncIterator[tuple[Server, dict[str, str]]]:
    async with seeded_server(mongo_uri) as (_, http):
        server = Server(http)
        key = RSAKey.import_key(BACKEND["jwk"])
        r = await request_token(server, assertion(key, BACKEND["client_id"], "RS384"))
        assert r.status_code == 200, r.text
        out = {"backend": r.json()["access_token"]}
        for role in ("sponsor", "spouse"):
            out[role] = await server.token(role, "openid fhirUser user/*.cruds")
        yield server, out


async def test_a_parent_learns_nothing_of_the_adolescents_tasks(
    tokens: tuple[Server, dict[str, str]],
) -> None:
    server, tok = tokens
    assert "Task" not in TABLE["bands"]["adolescent"]["types"]
    # The control: the Task exists and tracks the teen's message.
    r = await server.get(tok["backend"], TASK)
    assert r.status_code == 200 and r.json()["for"]["reference"] == TEEN
    searches = [
        ("Task", {"subject": TEEN}),
        ("Task", {"patient": TEEN}),
        ("Task", {"focus": MESSAGE}),
        ("Task", {"code": CODE, "_count": "200"}),
        ("Task", {"owner": "CareTeam/careteam-sophia-carter"}),
        ("Patient", {"_id": PATIENT["sophia"], "_revinclude": "Task:subject"}),
        ("Patient", {"_id": PATIENT["sophia"], "_revinclude": "Task:focus"}),
    ]
    for parent in ("sponsor", "spouse"):
        token = tok[parent]
        _same_as_missing(await server.get(token, TASK), await server.get(token, "Task/no-such"))
        _same_as_missing(
            await server.get(token, f"{TASK}/_history"),
            await server.get(token, "Task/no-such/_history"),
        )
        for rt, params in searches:
            r = await server.get(token, rt, **params)
            assert r.status_code == 200, r.text
            found = {
                f"{e['resource']['resourceType']}/{e['resource']['id']}"
                for e in r.json().get("entry", [])
            }
            assert TASK not in found and not any(f.startswith("Task/") and TEEN in f for f in found)
            assert all(
                e["resource"].get("for", {}).get("reference") != TEEN
                for e in r.json().get("entry", [])
            ), (parent, rt, params)
        # `_has` and the count answer as for a Task that does not exist.
        has = await server.get(
            token, "Patient", _id=PATIENT["sophia"], **{"_has:Task:subject:code": CODE}
        )
        assert ids(has.json()) == set(), has.text
        count = await server.get(token, "Task", subject=TEEN, _summary="count")
        assert count.json().get("total", 0) == 0
