"""The leak matrix's actors on the messaging paths (docs/portal.md): threads, a thread's
messages, the pool inbox, unread searches, `$recipients`, `$mark-read` and writes into a
thread. No message or thread of the adolescent reaches a parent, on any path; each answer
for a hidden thread is exactly the answer for a missing one. Expectations come from the
matrix's oracle (`expected_visible`: profiles/access/family.json and the seed's declared
facts), never from the server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from joserfc.jwk import RSAKey

from seed_data.directory import CLINIC_NURSE_POOL, PEOPLE, care_team_id
from tests.integration.access.test_leak_matrix import (
    ACTORS,
    CLINICIAN_LOGIN,
    PATIENT,
    SCOPED,
    Target,
    _same_as_missing,
    can_write,
    expected_visible,
    type_granted,
)
from tests.integration.access.test_smart_enforcement import Server
from tests.integration.auth.conftest import BACKEND
from tests.integration.auth.test_backend_services import assertion, request_token
from tests.integration.seeded import seeded_server

SOPHIA = f"Patient/{PATIENT['sophia']}"
POOL = f"CareTeam/{CLINIC_NURSE_POOL[PEOPLE['sophia'].clinic]}"
THREAD = "Communication/msg-sophia-followup"
# What the fixture adds to the seed: the teen's unread message to the clinic's nurse pool
# in her thread, and an unread answer to her.
TO_POOL = "leak-sophia-to-pool"
TO_TEEN = "leak-answer-to-sophia"
TEEN = {
    ref: Target("sophia", "Communication", ref.split("/", 1)[1], message=True)
    for ref in (
        THREAD,
        "Communication/msg-sophia-followup-1",
        f"Communication/{TO_POOL}",
        f"Communication/{TO_TEEN}",
    )
}


@dataclass
class Env:
    app: FastAPI
    s: Server
    tokens: dict[str, str]

    async def get(self, actor: str, url: str, **params: str) -> httpx.Response:
        return await self.s.get(self.tokens[actor], url, **params)

    async def post(self, actor: str, url: str, body: Any) -> httpx.Response:
        return await self.s.http.post(
            f"/fhir/{url}",
            content=orjson.dumps(body) if body is not None else b"",
            headers={
                "Authorization": f"Bearer {self.tokens[actor]}",
                "Content-Type": "application/fhir+json",
            },
        )


async def _teen_messages(store: Any) -> None:
    base = {
        "resourceType": "Communication",
        "status": "completed",
        "partOf": [{"reference": THREAD}],
        "subject": {"reference": SOPHIA},
        "sent": "2026-01-02T10:00:00Z",
    }
    await store.update(
        "Communication",
        TO_POOL,
        {
            **base,
            "sender": {"reference": SOPHIA},
            "recipient": [{"reference": POOL}],
            "payload": [{"contentString": "leak probe to the pool"}],
        },
    )
    await store.update(
        "Communication",
        TO_TEEN,
        {
            **base,
            "sender": {"reference": "Practitioner/rn-jessica-moore"},
            "recipient": [{"reference": SOPHIA}],
            "payload": [{"contentString": "leak probe to the teen"}],
        },
    )


@pytest.fixture(scope="module")
async def env(mongo_uri: str) -> AsyncIterator[Env]:
    async with seeded_server(mongo_uri) as (app, http):
        await _teen_messages(app.state.ctx.store)
        s = Server(http)
        tokens = {}
        for actor in ACTORS:
            if actor == "backend" or actor in SCOPED:
                key = RSAKey.import_key(BACKEND["jwk"])
                scope = SCOPED[actor].scope if actor in SCOPED else "system/*.rs"
                r = await request_token(s, assertion(key, BACKEND["client_id"], "RS384"), scope)
                assert r.status_code == 200, r.text
                tokens[actor] = r.json()["access_token"]
            else:
                role = CLINICIAN_LOGIN.get(actor, actor)
                tokens[actor] = await s.token(role, "openid fhirUser user/*.cruds")
        yield Env(app, s, tokens)


def _refs(r: httpx.Response) -> set[str]:
    return {
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in r.json().get("entry", [])
        if "resource" in e
    }


@pytest.mark.parametrize("actor", list(ACTORS))
async def test_no_teen_message_leaks(env: Env, actor: str) -> None:
    failures: list[str] = []

    def check(path: str, ok: bool, detail: Any = "") -> None:
        if not ok:
            failures.append(f"{path}: {detail}")

    searches = {
        "threads": ("Communication", {"subject": SOPHIA, "part-of:missing": "true"}, {THREAD}),
        "messages": (
            "Communication",
            {"part-of": THREAD, "_sort": "sent"},
            set(TEEN) - {THREAD},
        ),
        "pool inbox": (
            "Communication",
            {"recipient": POOL, "received:missing": "true"},
            {f"Communication/{TO_POOL}"},
        ),
        "unread": (
            "Communication",
            {"recipient": SOPHIA, "received:missing": "true"},
            {f"Communication/{TO_TEEN}"},
        ),
        "compartment": (f"{SOPHIA}/Communication", {}, set(TEEN)),
    }
    granted = type_granted(actor, "Communication")
    for path, (url, params, wanted) in searches.items():
        r = await env.get(actor, url, **params, _count="200")
        if not granted:
            check(path, r.status_code == 403, r.status_code)
            continue
        if path == "compartment" and r.status_code == 404:
            # The compartment of a patient the caller cannot see answers as a missing one.
            m = await env.get(actor, "Patient/no-such-patient/Communication")
            check(path, m.status_code == 404, m.status_code)
            check(path, not any(expected_visible(actor, TEEN[w]) for w in wanted), "404")
            continue
        check(path, r.status_code == 200, r.text[:200])
        got = _refs(r)
        for ref in wanted:
            check(f"{path} {ref}", (ref in got) == expected_visible(actor, TEEN[ref]), got)
        count = await env.get(actor, url, **params, _summary="count")
        shown = sum(expected_visible(actor, TEEN[w]) for w in wanted)
        check(f"{path} count", count.json().get("total", 0) >= shown, count.text[:200])
        if shown == 0:
            check(f"{path} count", count.json().get("total") in (0, None), count.text[:200])

    # $recipients of the teen: her team reaches nobody who may not write for her, and a
    # patient hidden answers as a missing one.
    team = f"CareTeam/{care_team_id('sophia')}"
    sees = expected_visible(actor, TEEN[THREAD])
    r = await env.get(actor, "Communication/$recipients", patient=PATIENT["sophia"])
    if not granted:
        check("$recipients", r.status_code == 403, r.status_code)
    elif r.status_code == 404:
        m = await env.get(actor, "Communication/$recipients", patient="no-such-patient")
        try:
            _same_as_missing(r, m)
        except AssertionError as exc:
            check("$recipients", False, exc)
        check("$recipients", not sees, "404 for one who sees her thread")
    else:
        check("$recipients", (team in _refs(r)) == sees, r.text[:300])
    # $mark-read on a message to her: hidden answers exactly as missing.
    if granted and not sees:
        hidden = await env.post(actor, f"Communication/{TO_TEEN}/$mark-read", None)
        missing = await env.post(actor, "Communication/no-such-message/$mark-read", None)
        try:
            _same_as_missing(hidden, missing)
        except AssertionError as exc:
            check("$mark-read", False, exc)
        check("$mark-read", hidden.status_code in (403, 404), hidden.status_code)

    # Writing into her thread: hidden answers as a missing thread.
    if can_write(actor) and not expected_visible(actor, TEEN[THREAD]):
        me = ACTORS[actor][0]
        subject = f"Patient/{PATIENT[me]}" if me in PATIENT else SOPHIA
        for thread in (THREAD,):
            body = {
                "resourceType": "Communication",
                "status": "completed",
                "partOf": [{"reference": thread}],
                "subject": {"reference": subject},
                "payload": [{"contentString": "zqleak"}],
            }
            hidden = await env.post(actor, "Communication", body)
            missing_body = {**body, "partOf": [{"reference": "Communication/no-such-thread"}]}
            missing = await env.post(actor, "Communication", missing_body)
            try:
                _same_as_missing(hidden, missing)
            except AssertionError as exc:
                check("write into the thread", False, exc)
            check("write into the thread", hidden.status_code >= 400, hidden.status_code)
    found = await env.get("backend", "Communication", _content="zqleak")
    check("nothing stored", found.json().get("total") == 0, found.text[:200])
    assert not failures, failures
