"""The leak matrix's results-release paths (issue 14 item 6): a held result, or one whose
status the table does not release, is hidden from the patient and every proxy exactly as a
missing one, on every path: read, vread, instance and type history, search with its total and
`_summary=count`, the compartment search, POST `_search`, `_include`, `_revinclude`, `_has`,
chains, `$everything`, `$export`, the attachment Binary and the notification queue. Clinicians
on the care team see them. Once the hold's expiry passes (clock.fixed), the patient sees the
result on the next request with no write in between.

Actors and ids come from the leak matrix (test_leak_matrix.py) and the seed's declared facts
(seed_data/results_release.py: the held report and its expiry); the rules from
profiles/access/release.json. Nothing expected is read from the server.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from fhir_server import clock
from tests.integration.access.test_leak_matrix import (
    PATIENT,
    _all_ids,
    _match_ids,
    _same_as_missing,
)
from tests.integration.access.test_smart_enforcement import Server
from tests.integration.seeded import seeded_server

ROOT = Path(__file__).resolve().parents[3]
TABLE = json.loads((ROOT / "profiles/access/release.json").read_text())
HOLD = TABLE["hold"]
USER = "openid fhirUser user/*.cruds"
JAMES, LIAM = (f"Patient/{PATIENT[k]}" for k in ("james", "liam"))
SEEDED_HELD = "DiagnosticReport/dr-james-held-biopsy"  # seed_data/results_release.py
SEEDED_HELD_RESULT = "Observation/obs-james-held-biopsy-diagnosis"  # its result, held with it
# Patient and proxy tokens: James himself (user/ and a patient-launched app), his wife Maria
# (a guardian of Liam, nobody's proxy for James). The clinician: James's and Liam's PCM.
PATIENT_ACTORS = ("sponsor", "sponsor-app", "spouse")
CLINICIAN = "dr.rachel.kim"
LAB = {"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}


def hold_ext(expires: datetime) -> dict[str, Any]:
    return {
        "url": HOLD["extension"],
        "extension": [
            {
                "url": "reason",
                "valueCoding": {"system": HOLD["reason_system"], "code": "preventing-harm"},
            },
            {"url": "expires", "valueDateTime": expires.isoformat()},
        ],
    }


@dataclass(frozen=True)
class Target:
    ref: str
    owner: str  # "james" | "liam"
    expires: datetime | None  # None: hidden by its status, not by time


@dataclass
class Env:
    server: Server
    app: Any
    tokens: dict[str, str]
    targets: list[Target]
    probe: str  # a released DiagnosticReport of James whose `result` is a held Observation
    held_obs: str
    binary: str  # the attachment of a preliminary DocumentReference

    async def get(self, who: str, url: str, **params: str) -> httpx.Response:
        return await self.server.get(self.tokens[who], url, **params)

    async def create(self, body: dict[str, Any]) -> str:
        r = await self.server.post(self.tokens[CLINICIAN], body["resourceType"], body)
        assert r.status_code == 201, r.text
        return f"{body['resourceType']}/{r.json()['id']}"


def observation(subject: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [LAB]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
        "subject": {"reference": subject},
        "valueQuantity": {"value": 250, "unit": "mg/dL"},
        **extra,
    }


async def seeded_expiry(server: Server, token: str) -> datetime:
    r = await server.get(token, SEEDED_HELD)
    assert r.status_code == 200, r.text
    ext = next(e for e in r.json()["extension"] if e["url"] == HOLD["extension"])
    raw = next(p["valueDateTime"] for p in ext["extension"] if p["url"] == "expires")
    return datetime.fromisoformat(raw)


@pytest.fixture(scope="module")
async def env(mongo_uri: str) -> AsyncIterator[Env]:
    async with seeded_server(mongo_uri) as (app, http):
        server = Server(http)
        tokens = {w: await server.token(w, USER) for w in ("sponsor", "spouse", CLINICIAN)}
        tokens["sponsor-app"] = await server.token(
            "sponsor", "openid fhirUser launch/patient patient/*.rs", patient=PATIENT["james"]
        )
        e = Env(server, app, tokens, [], "", "", "")
        soon = datetime.now(UTC).replace(microsecond=0) + timedelta(days=5)
        e.held_obs = await e.create(observation(JAMES, extension=[hold_ext(soon)]))
        liam_obs = await e.create(observation(LIAM, extension=[hold_ext(soon)]))
        e.probe = await e.create(
            {
                "resourceType": "DiagnosticReport",
                "status": "final",
                "code": {"text": "Glucose panel"},
                "subject": {"reference": JAMES},
                "result": [{"reference": e.held_obs}],
            }
        )
        # The note first (its Binary sits in the note's compartments: securityContext), then
        # the Binary, then the note naming it: the note's write hides the Binary.
        note_body: dict[str, Any] = {
            "resourceType": "DocumentReference",
            "status": "current",
            "docStatus": "preliminary",
            "type": {"text": "Progress note"},
            "subject": {"reference": JAMES},
            "content": [{"attachment": {"contentType": "application/pdf", "title": "Note"}}],
        }
        note = await e.create(note_body)
        pdf = base64.b64encode(b"%PDF-1.4 preliminary note").decode()
        binary = await e.create(
            {
                "resourceType": "Binary",
                "contentType": "application/pdf",
                "securityContext": {"reference": note},
                "data": pdf,
            }
        )
        note_body["content"][0]["attachment"]["url"] = binary
        r = await server.http.put(
            f"/fhir/{note}",
            json={**note_body, "id": note.split("/")[1]},
            headers={
                "Authorization": f"Bearer {tokens[CLINICIAN]}",
                "Content-Type": "application/fhir+json",
            },
        )
        assert r.status_code == 200, r.text
        e.binary = binary
        seeded = await seeded_expiry(server, tokens[CLINICIAN])
        e.targets = [
            Target(SEEDED_HELD, "james", seeded),
            Target(SEEDED_HELD_RESULT, "james", seeded),
            Target(e.held_obs, "james", soon),
            Target(liam_obs, "liam", soon),
            Target(note, "james", None),
        ]
        yield e


def sees(actor: str, target: Target) -> bool:
    """Family facts: James (both tokens) owns his records; Maria is Liam's guardian, not
    James's proxy; the PCM sees both. Results release hides held ones from all but her."""
    return actor == CLINICIAN


async def _paths(env: Env, actor: str, target: Target) -> list[str]:
    failures: list[str] = []
    rt, rid = target.ref.split("/")
    owner = PATIENT[target.owner]
    shown = sees(actor, target)

    def check(path: str, ok: bool, detail: Any = "") -> None:
        if not ok:
            failures.append(f"{actor} {target.ref} {path}: {detail}")

    for path, suffix in (("read", ""), ("vread", "/_history/1"), ("history", "/_history")):
        r = await env.get(actor, target.ref + suffix)
        if shown:
            check(path, r.status_code == 200, r.text[:200])
            continue
        m = await env.get(actor, f"{rt}/no-such-{rid}{suffix}")
        try:
            _same_as_missing(r, m)
        except AssertionError as exc:
            check(path, False, exc)
    r = await env.get(actor, rt, _count="500")
    check("search-type", (target.ref in _match_ids(r.json())) == shown, r.status_code)
    body = (await env.get(actor, rt, _id=rid)).json()
    check("search-total", body.get("total") == int(shown), body.get("total"))
    body = (await env.get(actor, rt, _id=rid, _summary="count")).json()
    check("summary-count", body.get("total") == int(shown), body.get("total"))
    r = await env.get(actor, f"Patient/{owner}/{rt}", _count="500")
    check("compartment", (target.ref in _match_ids(r.json())) == shown, r.text[:200])
    r = await env.server.http.post(
        f"/fhir/{rt}/_search",
        content=f"_id={rid}&_total=accurate",
        headers={
            "Authorization": f"Bearer {env.tokens[actor]}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    check("post-search", r.json().get("total") == int(shown), r.text[:200])
    r = await env.get(actor, "Patient", _id=owner, _revinclude=f"{rt}:patient")
    check("revinclude", (target.ref in _all_ids(r.json())) == shown, r.text[:200])
    r = await env.get(actor, "Patient", **{"_id": owner, f"_has:{rt}:patient:_id": rid})
    check("has", (f"Patient/{owner}" in _match_ids(r.json())) == shown, r.text[:200])
    r = await env.get(actor, f"{rt}/_history", _count="500")
    check("history-type", (target.ref in _all_ids(r.json())) == shown, r.status_code)
    r = await env.get(actor, f"Patient/{owner}/$everything", _count="1000")
    if r.status_code == 200:
        check("everything", (target.ref in _all_ids(r.json())) == shown, r.text[:200])
    else:
        check("everything", not shown and r.status_code == 404, r.status_code)
    if target.ref == env.held_obs:
        r = await env.get(
            actor,
            "DiagnosticReport",
            _id=env.probe.split("/")[1],
            _include="DiagnosticReport:result",
        )
        all_ids = _all_ids(r.json())
        check("include-probe", (env.probe in all_ids) == (actor != "spouse"), r.text[:200])
        check("include", (target.ref in all_ids) == shown, r.text[:300])
        r = await env.get(actor, "DiagnosticReport", **{"result._id": rid})
        check("chain", (env.probe in _match_ids(r.json())) == shown, r.text[:300])
    return failures


async def _export(env: Env, actor: str) -> set[str]:
    http, auth = env.server.http, {"Authorization": f"Bearer {env.tokens[actor]}"}
    r = await http.get("/fhir/$export", headers={**auth, "Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    location = r.headers["content-location"]
    for _ in range(2400):
        r = await http.get(location, headers=auth)
        if r.status_code != 202:
            break
        await asyncio.sleep(0.05)
    assert r.status_code == 200, r.text
    out: set[str] = set()
    for item in r.json()["output"]:
        f = await http.get(item["url"], headers=auth)
        for line in f.content.splitlines():
            res = orjson.loads(line)
            out.add(f"{res['resourceType']}/{res['id']}")
    return out


@pytest.mark.parametrize("actor", [*PATIENT_ACTORS, CLINICIAN])
async def test_held_results_are_hidden_on_every_path(env: Env, actor: str) -> None:
    failures = [f for t in env.targets for f in await _paths(env, actor, t)]
    assert not failures, "\n".join(failures)


async def test_held_results_stay_out_of_export(env: Env) -> None:
    # James exports his own record and, as Liam's guardian, Liam's (the proxy path).
    exported = await _export(env, "sponsor")
    assert not {t.ref for t in env.targets} & exported
    assert env.binary not in exported
    assert env.probe in exported  # the export does run over James's results
    assert "Patient/" + PATIENT["liam"] in exported


async def test_the_attachment_of_an_unreleased_result_is_hidden(env: Env) -> None:
    for actor in PATIENT_ACTORS:
        r = await env.get(actor, env.binary)
        m = await env.get(actor, "Binary/no-such-binary")
        _same_as_missing(r, m)
    assert (await env.get(CLINICIAN, env.binary)).status_code == 200


async def test_no_notification_is_due_before_the_hold_ends(env: Env) -> None:
    queue = env.app.state.ctx.store.db.notifications
    now = datetime.now(UTC)
    for t in env.targets:
        early = await queue.find(
            {"result": t.ref, "state": {"$ne": "cancelled"}, "due": {"$lte": now}}
        ).to_list(10)
        assert not early, (t.ref, early)
    # Nothing about the probe's held member either: a notification names its own result.
    for item in await queue.find({"result": env.probe}).to_list(10):
        assert env.held_obs not in orjson.dumps(item, default=str).decode()


async def test_an_expired_hold_releases_on_the_next_read(env: Env) -> None:
    seeded = env.targets[0]
    assert seeded.expires is not None
    with clock.fixed(seeded.expires + timedelta(seconds=1)):
        for actor in ("sponsor", "sponsor-app"):
            assert (await env.get(actor, seeded.ref)).status_code == 200
            body = (await env.get(actor, "DiagnosticReport", _id=seeded.ref.split("/")[1])).json()
            assert body["total"] == 1
            hist = (await env.get(actor, f"{seeded.ref}/_history")).json()
            assert seeded.ref in _all_ids(hist)
        # Maria is not James's proxy: released or not, his result is not hers.
        assert (await env.get("spouse", seeded.ref)).status_code == 404
    # The status-hidden note never releases by time.
    note = env.targets[-1]
    with clock.fixed(datetime.now(UTC) + timedelta(days=365)):
        assert (await env.get("sponsor", note.ref)).status_code == 404
