"""The leak matrix: actors x resources x paths, expectations derived from the policy table.

Every expected outcome comes from `profiles/access/family.json` (age thresholds, band types,
labels) and the seed's declared facts (who is whose parent, ages, grants: seed_data/README.md),
never from the server. A hidden resource must be indistinguishable from a missing one on
every path: same status, same issue code, no count, no include, no history entry.
https://hl7.org/fhir/R4/security.html
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc.jwk import RSAKey

from seed_data.directory import NURSE_POOLS, PEOPLE
from tests.integration.access.test_smart_enforcement import Server, ids
from tests.integration.auth.conftest import BACKEND
from tests.integration.auth.test_backend_services import assertion, request_token
from tests.integration.seeded import seeded_server

ROOT = Path(__file__).resolve().parents[3]
TABLE = json.loads((ROOT / "profiles/access/family.json").read_text())
LABELS = {(g["system"], c) for g in TABLE["sensitive_labels"] for c in g["codes"]}
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CONF = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
MESSAGE_TYPES = set(TABLE["care_team_messages"]["types"])

# Declared seed facts (seed_data/README.md): ages and relationships, not read from the server.
AGE = {"sophia": 15, "liam": 8, "daniel": 19, "emma": 20}
PATIENT = {
    "james": "sponsor-james-carter",
    "maria": "spouse-maria-carter",
    "sophia": "adolescent-sophia-carter",
    "liam": "child-liam-carter",
    "daniel": "dependent-daniel-carter",
    "emma": "dependent-emma-carter",
    "robert": "retiree-robert-alvarez",
    "eleanor": "managed-eleanor-brooks",
}
# (actor role) -> (its own person, login level, {dependent: relation})
ACTORS: dict[str, tuple[str | None, str | None, dict[str, str]]] = {
    "sponsor": (
        "james",
        "dslogon-premium",
        {"sophia": "guardian", "liam": "guardian", "daniel": "grantee", "emma": "guardian"},
    ),
    "spouse": ("maria", "dslogon-premium", {"sophia": "guardian", "liam": "guardian"}),
    "adult-dependent-no-grant": ("emma", "dslogon-premium", {}),
    "adult-dependent-granted": ("daniel", "dslogon-premium", {}),
    "basic-user": ("robert", "dslogon-basic", {}),
    "managed-account": (None, "managed", {"eleanor": "appointee"}),
    "practitioner": (None, "cac", {}),
    "nurse": (None, "cac", {}),
    "backend": (None, None, {}),
    "backend-id-scope": (None, None, {}),
    "backend-patient-scope": (None, None, {}),
}
# Clinician actors: their login and the seed people whose care team they are on, from the
# seed's declared directory (each person's PCM and clinic; a clinic's nurse pool sits in the
# care team of each of its patients), not from the server.
CLINICIAN_LOGIN = {"practitioner": "dr.rachel.kim", "nurse": "rn.jessica.moore"}
ON_CARE_TEAM = {
    "practitioner": {k for k, p in PEOPLE.items() if p.pcm == "rachel"},
    "nurse": {
        k
        for k, p in PEOPLE.items()
        if p.clinic in {clinic for _, clinic, nurses in NURSE_POOLS.values() if "jessica" in nurses}
    },
}
BASIC_TYPES = {"Patient", "Appointment", "Immunization", "AllergyIntolerance"}


@dataclass(frozen=True)
class Scoped:
    """A backend actor holding one query-qualified scope: what it grants, read from the
    scope's own words (SMART v2 scopes: `system/<type>.rs?<search>`)."""

    rt: str
    param: str
    value: str

    @property
    def scope(self) -> str:
        return f"system/{self.rt}.rs?{self.param}={self.value}"

    def inside(self, t: Target) -> bool:
        if t.rt != self.rt:
            return False
        if self.param == "_id":
            return t.id == self.value
        return f"Patient/{PATIENT[t.owner]}" == self.value  # `patient=`


SCOPED = {
    "backend-id-scope": Scoped("Observation", "_id", "obs-sophia-weight"),
    "backend-patient-scope": Scoped("Immunization", "patient", "Patient/" + PATIENT["sophia"]),
}


@dataclass(frozen=True)
class Target:
    owner: str
    rt: str
    id: str
    labelled: bool = False
    message: bool = False

    @property
    def ref(self) -> str:
        return f"{self.rt}/{self.id}"


TARGETS = [
    Target("sophia", "Observation", "obs-sophia-chlamydia-naat", labelled=True),
    Target("sophia", "Appointment", "appt-sophia-reproductive-health", labelled=True),
    Target("sophia", "Appointment", "appt-sophia-well-visit"),
    Target("sophia", "Immunization", "imm-sophia-hpv"),
    Target("sophia", "AllergyIntolerance", "allergy-sophia-dust-mite"),
    Target("sophia", "Observation", "obs-sophia-weight"),
    Target("sophia", "Communication", "msg-sophia-followup-1", message=True),
    Target("sophia", "Immunization", "imm-sophia-v2-psy-probe", labelled=True),
    Target("liam", "Observation", "obs-liam-peanut-ige"),
    Target("liam", "Communication", "msg-liam-sports-form-2"),
    Target("daniel", "Condition", "cond-daniel-alcohol-use", labelled=True),
    Target("daniel", "Condition", "cond-daniel-mcl-injury"),
    Target("emma", "Condition", "cond-emma-allergic-rhinitis"),
    Target("robert", "Immunization", "imm-robert-flu"),
    Target("robert", "Appointment", "appt-robert-psy-probe", labelled=True),
    Target("eleanor", "Condition", "cond-eleanor-osteoporosis"),
    Target("eleanor", "Immunization", "imm-eleanor-psy-probe", labelled=True),
]


def band_of(actor: str, owner: str) -> dict[str, Any] | None:
    """The table's band for what `actor` sees of `owner` (None: nothing)."""
    me, level, relations = ACTORS[actor]
    clinician = {"types": "*", "hide_labelled": False, "hide_care_team_messages": False}
    if actor == "backend" or actor in SCOPED:
        return clinician
    if actor in ON_CARE_TEAM:
        return clinician if owner in ON_CARE_TEAM[actor] else None
    if owner == me:
        return {
            "types": "*",
            "hide_labelled": level in TABLE["labels_hidden_from_basic_logins"],
            "hide_care_team_messages": False,
        }
    relation = relations.get(owner)
    if relation == "appointee":
        return TABLE["bands"]["managed"]
    if relation is None:
        return None
    age = AGE[owner]
    if age >= TABLE["ages"]["adult_from"]:
        return TABLE["bands"]["adult-granted"] if relation == "grantee" else None
    if age >= TABLE["ages"]["restricted_from"]:
        return TABLE["bands"]["adolescent"] if relation == "guardian" else None
    return TABLE["bands"]["child"] if relation == "guardian" else None


def expected_visible(actor: str, t: Target) -> bool:
    band = band_of(actor, t.owner)
    if band is None:
        return False
    if actor in SCOPED and not SCOPED[actor].inside(t):
        return False
    if band["types"] != "*" and t.rt not in band["types"]:
        return False
    if t.labelled and band["hide_labelled"]:
        return False
    return not (t.message and band["hide_care_team_messages"] and t.rt in MESSAGE_TYPES)


def type_granted(actor: str, rt: str) -> bool:
    if actor in SCOPED:
        return rt == SCOPED[actor].rt
    return not (actor == "basic-user" and rt not in BASIC_TYPES)


def can_write(actor: str) -> bool:
    return actor not in ("basic-user", "backend", *SCOPED)


# --- fixtures ---------------------------------------------------------------------------

SENSITIVE = [
    {"system": ACT, "code": "PSY"},
    {"system": CONF, "code": "R"},
]


async def _probes(store: Any) -> None:
    """Resources the seed lacks: a labelled record of the Basic user and of the managed
    beneficiary, a record labelled only in its second version, and one unlabelled
    Appointment per owner pointing at every target (for _include and chains)."""
    await store.update(
        "Appointment",
        "appt-robert-psy-probe",
        {
            "resourceType": "Appointment",
            "meta": {"security": SENSITIVE},
            "status": "booked",
            "participant": [
                {"actor": {"reference": f"Patient/{PATIENT['robert']}"}, "status": "accepted"}
            ],
        },
    )
    imm = {
        "resourceType": "Immunization",
        "status": "completed",
        "vaccineCode": {"text": "probe"},
        "occurrenceDateTime": "2025-01-01",
    }
    await store.update(
        "Immunization",
        "imm-eleanor-psy-probe",
        {
            **imm,
            "meta": {"security": SENSITIVE},
            "patient": {"reference": "Patient/" + PATIENT["eleanor"]},
        },
    )
    sophia = {**imm, "patient": {"reference": "Patient/" + PATIENT["sophia"]}}
    await store.update("Immunization", "imm-sophia-v2-psy-probe", sophia)
    await store.update(
        "Immunization", "imm-sophia-v2-psy-probe", {**sophia, "meta": {"security": SENSITIVE}}
    )
    for owner in {t.owner for t in TARGETS}:
        await store.update(
            "Appointment",
            f"probe-{owner}",
            {
                "resourceType": "Appointment",
                "status": "booked",
                "participant": [
                    {"actor": {"reference": f"Patient/{PATIENT[owner]}"}, "status": "accepted"}
                ],
                "supportingInformation": [
                    {"reference": t.ref} for t in TARGETS if t.owner == owner
                ],
            },
        )


@dataclass
class Matrix:
    server: Server
    tokens: dict[str, str]
    checks: list[int]


@pytest.fixture(scope="module")
async def matrix(mongo_uri: str) -> AsyncIterator[Matrix]:
    async with seeded_server(mongo_uri) as (app, http):
        await _probes(app.state.ctx.store)
        server = Server(http)
        tokens = {}
        for actor in ACTORS:
            if actor == "backend" or actor in SCOPED:
                key = RSAKey.import_key(BACKEND["jwk"])
                scope = SCOPED[actor].scope if actor in SCOPED else "system/*.rs"
                signed = assertion(key, BACKEND["client_id"], "RS384")
                r = await request_token(server, signed, scope)
                assert r.status_code == 200, r.text
                tokens[actor] = r.json()["access_token"]
            else:
                role = CLINICIAN_LOGIN.get(actor, actor)
                tokens[actor] = await server.token(role, "openid fhirUser user/*.cruds")
        m = Matrix(server, tokens, [0])
        yield m
        print(f"\nleak matrix: {m.checks[0]} checks")


# --- the matrix -------------------------------------------------------------------------


def _same_as_missing(hidden: httpx.Response, missing: httpx.Response) -> None:
    assert hidden.status_code == missing.status_code, (hidden.text, missing.text)
    if hidden.status_code >= 400:
        h, m = hidden.json(), missing.json()
        assert [i["code"] for i in h["issue"]] == [i["code"] for i in m["issue"]]
        text = hidden.text.lower()
        for word in ("suppress", "hidden", "label", "consent", "restricted", "sensitive"):
            assert word not in text, hidden.text


def _match_ids(bundle: dict[str, Any]) -> set[str]:
    return ids(bundle)


def _all_ids(bundle: dict[str, Any]) -> set[str]:
    return {
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if "resource" in e and "id" in e["resource"]
    }


@dataclass
class Round:
    """One actor's pass over every target. A GET that several targets share (the type
    search, the type history, the owner's compartment and its include paths) is asked once
    and its answer checked for each of them: nothing the matrix sends changes what those
    answer for a target (an unchanged conditional update makes no version; a ghost has its
    own id). Every check stays one check per target and path."""

    matrix: Matrix
    actor: str
    answers: dict[tuple[str, tuple[tuple[str, str], ...]], httpx.Response] = field(
        default_factory=dict
    )
    requests: int = 0

    async def get(self, url: str, **params: str) -> httpx.Response:
        key = (url, tuple(sorted(params.items())))
        if key not in self.answers:
            self.requests += 1
            self.answers[key] = await self.matrix.server.get(
                self.matrix.tokens[self.actor], url, **params
            )
        return self.answers[key]


@pytest.mark.parametrize("actor", list(ACTORS))
async def test_leak_matrix(matrix: Matrix, actor: str) -> None:
    """Every target on every path for one actor; all failures reported at once."""
    round_ = Round(matrix, actor)
    failures: list[str] = []
    for target in TARGETS:
        failures += [f"{target.ref}: {f}" for f in await _paths(round_, target)]
    assert not failures, failures


async def _paths(round_: Round, target: Target) -> list[str]:
    """The failed checks of one (actor, target) cell."""
    matrix, actor = round_.matrix, round_.actor
    s, token = matrix.server, matrix.tokens[actor]
    visible = expected_visible(actor, target)
    rt, rid, ref = target.rt, target.id, target.ref
    owner = f"Patient/{PATIENT[target.owner]}"
    missing_ref = f"{rt}/no-such-{rid}"
    granted = type_granted(actor, rt)
    # History is refused under a query-qualified scope on the type (docs/access.md), for a
    # hidden id exactly as for a missing one.
    no_history = actor in SCOPED and granted
    failures: list[str] = []

    def check(path: str, ok: bool, detail: Any = "") -> None:
        matrix.checks[0] += 1
        if not ok:
            failures.append(f"{path}: {detail}")

    get = round_.get

    # read and vread: 200 when visible; otherwise exactly the answer for a missing id.
    for path, suffix in (("read", ""), ("vread", "/_history/1"), ("history-instance", "/_history")):
        r = await get(ref + suffix)
        if no_history and path == "history-instance":
            check(path, r.status_code == 403, r.status_code)
        elif visible and granted:
            check(path, r.status_code == 200, r.text[:200])
            if path != "history-instance":
                check(f"{path}-id", r.json().get("id") == rid, r.text[:200])
        else:
            m = await get(missing_ref + suffix)
            # A missing id is never answered with some other resource (an `_id` scope once
            # replaced the read's id: issue 6).
            check(f"{path}-missing", m.status_code in (403, 404), m.text[:200])
            try:
                _same_as_missing(r, m)
                check(path, True)
            except AssertionError as exc:
                check(path, False, exc)
    if not granted:
        r = await get(rt)
        check("search-type", r.status_code == 403, r.status_code)
        return failures
    shown = visible
    r = await get(rt, _count="500")
    check(
        "search-type",
        r.status_code == 200 and (ref in _match_ids(r.json())) == shown,
        r.status_code,
    )
    r = await get(rt, _id=rid)
    body = r.json()
    check(
        "search-id",
        (ref in _match_ids(body)) == shown and body.get("total") == int(shown),
        body.get("total"),
    )
    r = await get(f"Patient/{PATIENT[target.owner]}/{rt}", _count="500")
    check("compartment", (ref in _match_ids(r.json())) == shown, r.text[:200])
    r = await s.http.post(
        f"/fhir/{rt}/_search",
        content=f"_id={rid}&_total=accurate",
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    check("post-search", r.json().get("total") == int(shown), r.text[:200])
    r = await get(rt, _id=rid, _summary="count")
    check("summary-count", r.json().get("total") == int(shown), r.text[:200])
    r = await get(rt, _id=rid, _elements="meta")
    check("elements", (ref in _match_ids(r.json())) == shown, r.text[:200])
    # Paths through Patient and Appointment searches need those types granted.
    if type_granted(actor, "Patient"):
        r = await get("Patient", _id=PATIENT[target.owner], _revinclude=f"{rt}:patient")
        check("revinclude", (ref in _all_ids(r.json())) == shown, r.text[:200])
    probe = f"probe-{target.owner}"
    if type_granted(actor, "Appointment"):
        r = await get("Appointment", _id=probe, _include="Appointment:supporting-info")
        check("include", (ref in _all_ids(r.json())) == shown, r.text[:300])
        r = await get(
            "Patient",
            _id=PATIENT[target.owner],
            _revinclude="Appointment:patient",
            **{"_include:iterate": "Appointment:supporting-info"},
        )
        check("include-iterate", (ref in _all_ids(r.json())) == shown, r.text[:300])
    if type_granted(actor, "Patient"):
        r = await get("Patient", **{"_id": PATIENT[target.owner], f"_has:{rt}:patient:_id": rid})
        check("has", (owner in _match_ids(r.json())) == shown, r.text[:300])
    if type_granted(actor, "Appointment"):
        r = await get("Appointment", **{"_id": probe, f"supporting-info:{rt}._id": rid})
        check("chain", (f"Appointment/{probe}" in _match_ids(r.json())) == shown, r.text[:300])
    r = await get(f"{rt}/_history", _count="500")
    if no_history:
        check("history-type", r.status_code == 403, r.status_code)
    else:
        check("history-type", (ref in _all_ids(r.json())) == shown, r.status_code)
    if target.labelled:
        labels = ",".join(f"{s_}|{c}" for s_, c in sorted(LABELS))
        r = await get(rt, _security=labels, _id=rid)
        check("security-search", (ref in _match_ids(r.json())) == shown, r.text[:200])

    # A GET inside a transaction answers as on its own.
    def tx(url: str) -> dict[str, Any]:
        return {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [{"request": {"method": "GET", "url": url}}],
        }

    r = await s.post(token, "", tx(ref))
    if shown:
        check("transaction-get", r.status_code == 200, r.text[:300])
    else:
        # A failing GET fails the whole transaction, exactly as for a missing id.
        m = await s.post(token, "", tx(missing_ref))
        check("transaction-get", r.status_code == m.status_code, (r.text[:200], m.text[:200]))
    # Conditional update guard: PUT rt?_id=<id> with the resource unchanged.
    if can_write(actor):
        backend = matrix.tokens["backend"]
        current = (await s.get(backend, ref)).json()
        put = await s.http.put(
            f"/fhir/{rt}",
            params={"_id": rid},
            json=current,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"},
        )
        if shown:
            # Seen, so it may be told apart from a missing one; whether the actor may write it
            # is the write table's (test_write_matrix.py checks each status exactly).
            refused = put.status_code in (403, 422) and put.json()["issue"][0]["code"] in (
                "forbidden",
                "business-rule",
            )
            check("conditional-update", put.status_code == 200 or refused, put.text[:300])
        else:
            ghost = {**current, "id": f"no-such-{rid}"}
            m = await s.http.put(
                f"/fhir/{rt}",
                params={"_id": f"no-such-{rid}"},
                json=ghost,
                headers={
                    "Authorization": f"Bearer {token}",
                    "Content-Type": "application/fhir+json",
                },
            )
            try:
                _same_as_missing(put, m)
                check("conditional-update", True)
            except AssertionError as exc:
                check("conditional-update", False, exc)
    return failures
