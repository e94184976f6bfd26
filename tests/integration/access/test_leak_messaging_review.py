"""A leak and bypass hunt on the messaging paths (docs/portal.md, "Secure messaging"), over
HTTP with real SMART tokens from the login pages, on one seeded server: what a parent learns
of the adolescent's threads, what one patient does with another's messages, forged senders,
recipient tricks, mixed transaction bundles, the Basic and Managed logins, and a clinician
off the patient's care team. Each hidden answer must be the answer for a missing one, and
a refused write stores nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from joserfc.jwk import RSAKey

from seed_data.directory import CLINIC_NURSE_POOL, PEOPLE, care_team_id
from tests.integration.access.test_leak_matrix import PATIENT, _same_as_missing
from tests.integration.access.test_smart_enforcement import Server
from tests.integration.auth.conftest import BACKEND
from tests.integration.auth.test_backend_services import assertion, request_token
from tests.integration.seeded import seeded_server

SOPHIA = f"Patient/{PATIENT['sophia']}"
EMMA = f"Patient/{PATIENT['emma']}"
JAMES = f"Patient/{PATIENT['james']}"
POOL = f"CareTeam/{CLINIC_NURSE_POOL[PEOPLE['sophia'].clinic]}"
EMMA_TEAM = f"CareTeam/{care_team_id('emma')}"
TEEN_THREAD = "msg-sophia-followup"
TEEN_MSG = "msg-sophia-followup-1"
JAMES_THREAD = "msg-james-cholesterol"
EMMA_THREAD = "msg-emma-allergy"
ELEANOR_THREAD = "msg-eleanor-medications"
LOGINS = {
    "sponsor": "sponsor",
    "spouse": "spouse",
    "emma": "adult-dependent-no-grant",
    "daniel": "adult-dependent-granted",
    "basic": "basic-user",
    "managed": "managed-account",
    "kim": "dr.rachel.kim",
    "nurse": "rn.jessica.moore",
}
MARK = "zqreview"


@dataclass
class Env:
    s: Server
    tokens: dict[str, str]

    async def call(
        self,
        actor: str,
        method: str,
        url: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        content_type: str = "application/fhir+json",
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        return await self.s.http.request(
            method,
            f"/fhir/{url}",
            params=params,
            content=orjson.dumps(body) if body is not None else None,
            headers={
                "Authorization": f"Bearer {self.tokens[actor]}",
                "Content-Type": content_type,
                **(headers or {}),
            },
        )

    async def get(self, actor: str, url: str, **params: str) -> httpx.Response:
        return await self.call(actor, "GET", url, params=params)


@pytest.fixture(scope="module")
async def env(mongo_uri: str) -> AsyncIterator[Env]:
    async with seeded_server(mongo_uri) as (app, http):
        s = Server(http)
        tokens = {a: await s.token(r, "openid fhirUser user/*.cruds") for a, r in LOGINS.items()}
        # The organisation's backend: the judge of what was stored.
        key = RSAKey.import_key(BACKEND["jwk"])
        r = await request_token(s, assertion(key, BACKEND["client_id"], "RS384"), "system/*.rs")
        assert r.status_code == 200, r.text
        tokens["backend"] = r.json()["access_token"]
        yield Env(s, tokens)


def _refs(r: httpx.Response) -> set[str]:
    return {
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in r.json().get("entry", [])
        if "resource" in e
    }


def message(about: str, thread: str, **extra: Any) -> dict[str, Any]:
    return {
        **{
            "resourceType": "Communication",
            "status": "completed",
            "partOf": [{"reference": f"Communication/{thread}"}],
            "subject": {"reference": about},
            "payload": [{"contentString": MARK}],
        },
        **extra,
    }


class Checks:
    def __init__(self) -> None:
        self.failures: list[str] = []
        self.held = 0

    def __call__(self, what: str, ok: bool, detail: Any = "") -> None:
        if ok:
            self.held += 1
        else:
            self.failures.append(f"{what}: {str(detail)[:400]}")

    def same(self, what: str, hidden: httpx.Response, missing: httpx.Response) -> None:
        try:
            _same_as_missing(hidden, missing)
            self(what, True)
        except AssertionError as exc:
            self(what, False, exc)


async def test_parent_learns_nothing_of_the_teen(env: Env) -> None:
    c = Checks()
    for parent in ("sponsor", "spouse"):
        hidden_ids = {f"Communication/{TEEN_THREAD}", f"Communication/{TEEN_MSG}"}
        searches = [
            ("Communication", {"_id": f"{TEEN_THREAD},{TEEN_MSG}"}),
            ("Communication", {"subject": SOPHIA}),
            ("Communication", {"patient": SOPHIA}),
            ("Communication", {"sender": SOPHIA}),
            ("Communication", {"recipient": SOPHIA}),
            ("Communication", {"part-of": f"Communication/{TEEN_THREAD}"}),
            ("Communication", {"part-of:missing": "false", "subject": SOPHIA}),
            ("Communication", {"recipient": POOL}),
            ("Communication", {"subject:Patient.name": "sophia"}),
            ("Communication", {"_has:Communication:part-of:subject": SOPHIA}),
            ("Communication", {"_content": "followup"}),
            ("Communication", {"_text": "sophia"}),
            ("Communication", {"_id": JAMES_THREAD, "_revinclude": "Communication:part-of"}),
            ("Communication", {"_revinclude:iterate": "Communication:part-of", "subject": JAMES}),
            ("Communication", {"_include": "Communication:part-of", "recipient": POOL}),
            ("Communication", {"_include:iterate": "Communication:in-response-to"}),
            (f"CareTeam/{care_team_id('sophia')}/$everything", {}),
            ("CareTeam", {"_revinclude": "Communication:recipient"}),
            ("Patient", {"_revinclude": "Communication:subject", "_id": PATIENT["sophia"]}),
            ("Patient", {"_has:Communication:subject:_id": TEEN_THREAD}),
            ("Patient", {"_has:Communication:subject:status": "in-progress"}),
            ("CareTeam", {"_has:Communication:recipient:subject": SOPHIA}),
            ("Task", {"for": SOPHIA}),
            ("Task", {"owner": POOL}),
            ("Task", {"focus": f"Communication/{TEEN_MSG}"}),
            (f"{SOPHIA}/Communication", {}),
            (f"{SOPHIA}/$everything", {}),
            ("Communication/_history", {}),
            ("_history", {}),
            ("", {"_type": "Communication"}),
        ]
        for url, params in searches:
            r = await env.get(parent, url, **params, _count="500")
            what = f"{parent} GET {url}?{params}"
            if r.status_code >= 400:
                c(what, r.status_code in (400, 403, 404), r.status_code)
                continue
            got = _refs(r)
            c(what, not (got & hidden_ids), got & hidden_ids)
            entries = orjson.dumps(r.json().get("entry", [])).decode()
            c(what + " text", TEEN_THREAD not in entries, "id in an entry")
            n = await env.get(parent, url, **params, _summary="count")
            if n.status_code == 200 and url == "Communication" and params.get("subject") == SOPHIA:
                c(what + " count", n.json().get("total") in (0, None), n.text[:200])
        # Instance paths: each answers as a missing id.
        for path in ("", "/_history", "/_history/1", "/$mark-read"):
            method = "POST" if path == "/$mark-read" else "GET"
            h = await env.call(parent, method, f"Communication/{TEEN_MSG}{path}")
            m = await env.call(parent, method, f"Communication/no-such-msg{path}")
            c.same(f"{parent} {method} {path}", h, m)
        patch = [{"op": "add", "path": "/received", "value": "2026-01-01T00:00:00Z"}]
        patches: tuple[tuple[Any, str], ...] = (
            (patch, "application/json-patch+json"),
            ({"resourceType": "Parameters"}, "application/fhir+json"),
        )
        for ops, ct in patches:
            h = await env.call(parent, "PATCH", f"Communication/{TEEN_MSG}", ops, content_type=ct)
            m = await env.call(parent, "PATCH", "Communication/no-such-msg", ops, content_type=ct)
            c.same(f"{parent} PATCH {ct}", h, m)
        h = await env.call(parent, "DELETE", f"Communication/{TEEN_MSG}")
        m = await env.call(parent, "DELETE", "Communication/no-such-msg")
        c.same(f"{parent} DELETE", h, m)
        # A PUT on her message's id must not succeed, and answers as on any id it may not write.
        h = await env.call(
            parent, "PUT", f"Communication/{TEEN_MSG}", message(SOPHIA, TEEN_THREAD, id=TEEN_MSG)
        )
        c(f"{parent} PUT her id", h.status_code >= 400, h.status_code)
        # Conditional interactions must not reveal her messages' existence.
        for cond in (
            f"_id={TEEN_MSG}",
            f"subject={SOPHIA}",
            f"part-of=Communication/{TEEN_THREAD}",
        ):
            own = message(JAMES, JAMES_THREAD)
            r = await env.call(parent, "POST", "Communication", own, {"If-None-Exist": cond})
            nm = await env.call(
                parent, "POST", "Communication", own, {"If-None-Exist": "_id=no-such-msg"}
            )
            c(
                f"{parent} If-None-Exist {cond}",
                r.status_code == nm.status_code,
                (r.status_code, r.text[:300], nm.status_code),
            )
            r = await env.call(parent, "PUT", f"Communication?{cond}", own)
            nm = await env.call(parent, "PUT", "Communication?_id=no-such-msg", own)
            c(
                f"{parent} cond PUT {cond}",
                r.status_code == nm.status_code,
                (r.status_code, r.text[:300], nm.status_code),
            )
            r = await env.call(parent, "DELETE", f"Communication?{cond}")
            c(
                f"{parent} cond DELETE {cond}",
                r.status_code != 200 or "1" not in r.text,
                r.text[:200],
            )
        # Writing into her thread or answering her message from his own thread.
        tries = {
            "into her thread": message(SOPHIA, TEEN_THREAD),
            "her thread, his subject": message(JAMES, TEEN_THREAD),
            "inResponseTo hers": message(
                JAMES, JAMES_THREAD, inResponseTo=[{"reference": f"Communication/{TEEN_MSG}"}]
            ),
        }
        missing = {
            "into her thread": message(SOPHIA, "no-such-thread"),
            "her thread, his subject": message(JAMES, "no-such-thread"),
            "inResponseTo hers": message(
                JAMES, JAMES_THREAD, inResponseTo=[{"reference": "Communication/no-such-msg"}]
            ),
        }
        for k, body in tries.items():
            h = await env.call(parent, "POST", "Communication", body)
            m = await env.call(parent, "POST", "Communication", missing[k])
            c(f"{parent} {k} refused", h.status_code >= 400, h.status_code)
            c.same(f"{parent} {k}", h, m)
        header = {
            "resourceType": "Communication",
            "status": "in-progress",
            "subject": {"reference": SOPHIA},
            "topic": {"text": MARK},
            "category": [
                {
                    "coding": [
                        {
                            "system": "https://mhs.example.org/fhir/CodeSystem/message-category",
                            "code": "medical-question",
                        }
                    ]
                }
            ],
            "recipient": [{"reference": f"CareTeam/{care_team_id('sophia')}"}],
        }
        h = await env.call(parent, "POST", "Communication", header)
        c(f"{parent} new thread for her", h.status_code >= 400, h.status_code)
        r = await env.get(parent, "Communication/$recipients", patient=PATIENT["sophia"])
        c(
            f"{parent} $recipients",
            r.status_code in (200, 404) and not _refs(r) if r.status_code == 200 else True,
            r.text[:300],
        )
    found = await env.get("backend", "Communication", _content=MARK, _count="500")
    stored = [
        e["resource"]
        for e in found.json().get("entry", [])
        if TEEN_THREAD in orjson.dumps(e["resource"]).decode()
        or e["resource"].get("subject", {}).get("reference") == SOPHIA
    ]
    c("nothing stored about her", not stored, stored)
    print("held", c.held)
    print("\n".join(c.failures))
    assert not c.failures, c.failures


HEADER_CATEGORY = [
    {
        "coding": [
            {
                "system": "https://mhs.example.org/fhir/CodeSystem/message-category",
                "code": "medical-question",
            }
        ]
    }
]


def header(subject: str, recipients: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Communication",
        "status": "in-progress",
        "subject": {"reference": subject},
        "topic": {"text": MARK},
        "category": HEADER_CATEGORY,
        "recipient": recipients,
        **extra,
    }


async def test_bypasses(env: Env) -> None:
    c = Checks()
    before = await env.get("backend", "Communication", _content=MARK, _count="500")
    earlier = _refs(before)
    team = [{"reference": EMMA_TEAM}]
    refused: dict[str, tuple[str, dict[str, Any]]] = {
        # Another patient's thread and messages.
        "into james's thread": ("emma", message(JAMES, JAMES_THREAD)),
        "james's thread, own subject": ("emma", message(EMMA, JAMES_THREAD)),
        "inResponseTo james's": (
            "emma",
            message(
                EMMA, EMMA_THREAD, inResponseTo=[{"reference": f"Communication/{JAMES_THREAD}-1"}]
            ),
        ),
        "inResponseTo her header": (
            "emma",
            message(
                EMMA, EMMA_THREAD, inResponseTo=[{"reference": f"Communication/{EMMA_THREAD}"}]
            ),
        ),
        "two parents": (
            "emma",
            message(
                EMMA,
                EMMA_THREAD,
                partOf=[
                    {"reference": f"Communication/{EMMA_THREAD}"},
                    {"reference": f"Communication/{JAMES_THREAD}"},
                ],
            ),
        ),
        "partOf a message": ("emma", message(EMMA, f"{EMMA_THREAD}-1")),
        # Forged senders.
        "sender another family's RP": (
            "emma",
            message(EMMA, EMMA_THREAD, sender={"reference": "RelatedPerson/rp-susan-for-eleanor"}),
        ),
        "sender a practitioner": (
            "emma",
            message(EMMA, EMMA_THREAD, sender={"reference": "Practitioner/pcm-rachel-kim"}),
        ),
        "sender a care team": ("emma", message(EMMA, EMMA_THREAD, sender={"reference": EMMA_TEAM})),
        "sender contained": (
            "emma",
            message(
                EMMA,
                EMMA_THREAD,
                contained=[{"resourceType": "Practitioner", "id": "p", "name": [{"text": "Dr"}]}],
                sender={"reference": "#p"},
            ),
        ),
        "sender absolute url of another": (
            "emma",
            message(
                EMMA,
                EMMA_THREAD,
                sender={"reference": "http://127.0.0.1:8080/fhir/Practitioner/pcm-rachel-kim"},
            ),
        ),
        "sender james (his own thread, emma's token)": (
            "emma",
            message(JAMES, JAMES_THREAD, sender={"reference": JAMES}),
        ),
        "kim as jessica": (
            "kim",
            message(EMMA, EMMA_THREAD, sender={"reference": "Practitioner/rn-jessica-moore"}),
        ),
        "kim as the pool": ("kim", message(EMMA, EMMA_THREAD, sender={"reference": POOL})),
        # Recipients.
        "recipient james's team": (
            "emma",
            header(EMMA, [{"reference": f"CareTeam/{care_team_id('james')}"}]),
        ),
        "recipient the IM pool": (
            "emma",
            header(EMMA, [{"reference": "CareTeam/careteam-im-nurse-pool"}]),
        ),
        "recipient an organization": (
            "emma",
            header(EMMA, [{"reference": "Organization/lakeside-family-medicine"}]),
        ),
        "recipient a practitioner": (
            "emma",
            header(EMMA, [{"reference": "Practitioner/pcm-rachel-kim"}]),
        ),
        "recipient contained": (
            "emma",
            header(
                EMMA,
                [{"reference": "#t"}],
                contained=[{"resourceType": "CareTeam", "id": "t", "name": "x"}],
            ),
        ),
        "recipient identifier beside team": (
            "emma",
            header(
                EMMA,
                [
                    *team,
                    {
                        "identifier": {
                            "system": "http://hl7.org/fhir/sid/us-npi",
                            "value": "1530000901",
                        }
                    },
                ],
            ),
        ),
        "recipient display only beside team": (
            "emma",
            header(EMMA, [*team, {"display": "Dr. Kim"}]),
        ),
        "message recipient identifier only": (
            "emma",
            message(
                EMMA,
                EMMA_THREAD,
                recipient=[{"identifier": {"value": "1530000901"}, "display": "Dr. Kim"}],
            ),
        ),
        "recipient another patient": (
            "emma",
            message(EMMA, EMMA_THREAD, recipient=[{"reference": JAMES}]),
        ),
        "partOf identifier beside header": (
            "emma",
            message(
                EMMA,
                EMMA_THREAD,
                partOf=[
                    {"reference": f"Communication/{EMMA_THREAD}"},
                    {"identifier": {"value": JAMES_THREAD}},
                ],
            ),
        ),
        "inResponseTo identifier only": (
            "emma",
            message(EMMA, EMMA_THREAD, inResponseTo=[{"identifier": {"value": "x"}}]),
        ),
        "nurse to another family's RP": (
            "nurse",
            message(
                EMMA, EMMA_THREAD, recipient=[{"reference": "RelatedPerson/rp-susan-for-eleanor"}]
            ),
        ),
        "kim to another patient": (
            "kim",
            message(EMMA, EMMA_THREAD, recipient=[{"reference": JAMES}]),
        ),
        "kim to james's RP for sophia": (
            "kim",
            message(
                EMMA, EMMA_THREAD, recipient=[{"reference": "RelatedPerson/rp-james-for-sophia"}]
            ),
        ),
        "nurse to the parent in the teen's thread": (
            "nurse",
            message(
                SOPHIA, TEEN_THREAD, recipient=[{"reference": "RelatedPerson/rp-james-for-sophia"}]
            ),
        ),
        # Clinicians off the patient's team.
        "kim into eleanor's thread": (
            "kim",
            message(f"Patient/{PATIENT['eleanor']}", ELEANOR_THREAD),
        ),
        "nurse into eleanor's thread": (
            "nurse",
            message(f"Patient/{PATIENT['eleanor']}", ELEANOR_THREAD),
        ),
        "kim new thread for eleanor": (
            "kim",
            header(
                f"Patient/{PATIENT['eleanor']}", [{"reference": f"Patient/{PATIENT['eleanor']}"}]
            ),
        ),
        # Logins.
        "basic": (
            "basic",
            header(
                f"Patient/{PATIENT['robert']}",
                [{"reference": f"CareTeam/{care_team_id('robert')}"}],
            ),
        ),
        "managed as eleanor to james's team": (
            "managed",
            message(
                f"Patient/{PATIENT['eleanor']}",
                ELEANOR_THREAD,
                recipient=[{"reference": f"CareTeam/{care_team_id('james')}"}],
            ),
        ),
        "managed into james's thread": ("managed", message(JAMES, JAMES_THREAD)),
        "daniel into james's thread": ("daniel", message(JAMES, JAMES_THREAD)),
    }
    for what, (actor, body) in refused.items():
        r = await env.call(actor, "POST", "Communication", body)
        c(f"{what} refused", 400 <= r.status_code < 500, (r.status_code, r.text[:300]))
        if r.status_code < 500 and r.status_code >= 400:
            c(f"{what} outcome", r.json().get("resourceType") == "OperationOutcome", r.text[:200])
    # Update-as-create (a client id) runs the same rules as a create.
    for what in ("sender a practitioner", "into james's thread", "recipient james's team"):
        actor, bad = refused[what]
        r = await env.call(
            actor, "PUT", "Communication/review-put-new", {**bad, "id": "review-put-new"}
        )
        c(f"PUT-create {what}", 400 <= r.status_code < 500, (r.status_code, r.text[:300]))
    teen_new = message(SOPHIA, TEEN_THREAD, id="msg-sophia-followup-9")
    h = await env.call("sponsor", "PUT", "Communication/msg-sophia-followup-9", teen_new)
    c(
        "sponsor PUT-create into her thread",
        400 <= h.status_code < 500,
        (h.status_code, h.text[:300]),
    )
    # Transactions mixing an allowed entry with each forbidden one store nothing.
    good = message(EMMA, EMMA_THREAD)
    for what in ("sender a practitioner", "into james's thread", "recipient james's team"):
        actor, bad = refused[what]
        for kind in ("transaction",):
            bundle: dict[str, Any] = {
                "resourceType": "Bundle",
                "type": kind,
                "entry": [
                    {"request": {"method": "POST", "url": "Communication"}, "resource": good},
                    {"request": {"method": "POST", "url": "Communication"}, "resource": bad},
                ],
            }
            r = await env.call("emma", "POST", "", bundle)
            c(f"transaction {what}", r.status_code >= 400, (r.status_code, r.text[:300]))
            # The same with the forbidden entry second as a PUT-create.
            bundle["entry"][1] = {
                "request": {"method": "PUT", "url": "Communication/review-tx-put"},
                "resource": {**bad, "id": "review-tx-put"},
            }
            r = await env.call("emma", "POST", "", bundle)
            c(f"transaction PUT {what}", r.status_code >= 400, (r.status_code, r.text[:300]))
    # Changes to another's or own stored message.
    own = await env.call("emma", "POST", "Communication", message(EMMA, EMMA_THREAD))
    c("emma's own message", own.status_code == 201, own.text[:300])
    mine = own.json()
    jp = "application/json-patch+json"
    changes = {
        "re-parent": [
            {
                "op": "replace",
                "path": "/partOf/0/reference",
                "value": f"Communication/{JAMES_THREAD}",
            }
        ],
        "sender": [
            {"op": "replace", "path": "/sender/reference", "value": "Practitioner/pcm-rachel-kim"}
        ],
        "recipient": [
            {
                "op": "replace",
                "path": "/recipient/0/reference",
                "value": f"CareTeam/{care_team_id('james')}",
            }
        ],
        "add recipient identifier": [
            {"op": "add", "path": "/recipient/-", "value": {"identifier": {"value": "1530000901"}}}
        ],
        "received by the sender": [
            {"op": "add", "path": "/received", "value": "2026-01-01T00:00:00Z"}
        ],
        "inResponseTo": [
            {
                "op": "add",
                "path": "/inResponseTo",
                "value": [{"reference": f"Communication/{JAMES_THREAD}-1"}],
            }
        ],
        "contained sender": [
            {
                "op": "add",
                "path": "/contained",
                "value": [{"resourceType": "Practitioner", "id": "p"}],
            },
            {"op": "replace", "path": "/sender/reference", "value": "#p"},
        ],
    }
    for what, ops in changes.items():
        r = await env.call("emma", "PATCH", f"Communication/{mine['id']}", ops, content_type=jp)
        c(f"patch {what} refused", 400 <= r.status_code < 500, (r.status_code, r.text[:300]))
    put = {**mine, "sender": {"reference": "Practitioner/pcm-rachel-kim"}}
    r = await env.call("emma", "PUT", f"Communication/{mine['id']}", put)
    c("put sender refused", 400 <= r.status_code < 500, (r.status_code, r.text[:300]))
    # Another patient's messages: read, mark read, patch, delete answer as missing.
    instance: tuple[tuple[str, str, Any, str], ...] = (
        ("", "GET", None, "application/fhir+json"),
        ("/$mark-read", "POST", None, "application/fhir+json"),
        ("", "PATCH", changes["received by the sender"], jp),
        ("", "DELETE", None, "application/fhir+json"),
    )
    for path, method, sent, ct in instance:
        h = await env.call(
            "emma", method, f"Communication/{JAMES_THREAD}-2{path}", sent, content_type=ct
        )
        m = await env.call("emma", method, f"Communication/no-such{path}", sent, content_type=ct)
        c.same(f"emma {method} james's{path}", h, m)
    # A clinician off the team: eleanor's thread is hidden or read-only.
    for actor in ("kim", "nurse"):
        r = await env.call(actor, "POST", f"Communication/{ELEANOR_THREAD}-1/$mark-read")
        c(
            f"{actor} marks eleanor's read",
            r.status_code in (403, 404),
            (r.status_code, r.text[:300]),
        )
        r = await env.call(
            actor,
            "PATCH",
            f"Communication/{ELEANOR_THREAD}",
            [{"op": "replace", "path": "/status", "value": "completed"}],
            content_type=jp,
        )
        c(
            f"{actor} closes eleanor's thread",
            r.status_code in (403, 404),
            (r.status_code, r.text[:300]),
        )
        r = await env.get(actor, "Communication/$recipients", patient=PATIENT["eleanor"])
        c(f"{actor} $recipients eleanor", r.status_code in (403, 404) or not _refs(r), r.text[:300])
    # A recipient marks read and nothing more (the sender's message is otherwise theirs).
    answer = f"Communication/{JAMES_THREAD}-2"  # the nurse's answer to the sponsor
    for what, ops in {
        "received and a note": [
            {"op": "add", "path": "/received", "value": "2026-01-01T00:00:00Z"},
            {"op": "add", "path": "/note", "value": [{"text": MARK}]},
        ],
        "a note": [{"op": "add", "path": "/note", "value": [{"text": MARK}]}],
        "the message's status": [{"op": "replace", "path": "/status", "value": "entered-in-error"}],
        "received and the sender": [
            {"op": "add", "path": "/received", "value": "2026-01-01T00:00:00Z"},
            {"op": "replace", "path": "/sender/reference", "value": JAMES},
        ],
    }.items():
        r = await env.call("sponsor", "PATCH", answer, ops, content_type=jp)
        c(f"recipient patches {what}", r.status_code in (403, 422), (r.status_code, r.text[:300]))
    # Basic: marking read is a write too.
    r = await env.call("basic", "POST", f"Communication/{JAMES_THREAD}-2/$mark-read")
    c("basic $mark-read", r.status_code in (403, 404), (r.status_code, r.text[:300]))
    found = await env.get("backend", "Communication", _content=MARK, _count="500")
    stored = _refs(found) - earlier - {f"Communication/{mine['id']}"}
    c("nothing else stored", not stored, stored)
    print("held", c.held)
    print("\n".join(c.failures))
    assert not c.failures, c.failures


async def test_clinicians_and_teams(env: Env) -> None:
    c = Checks()
    eleanor = f"Patient/{PATIENT['eleanor']}"
    tag = {
        "system": "https://mhs.example.org/fhir/CodeSystem/access-source",
        "code": "organisation-maintained",
    }
    own_team = {
        "resourceType": "CareTeam",
        "status": "active",
        "subject": {"reference": EMMA},
        "participant": [{"member": {"reference": "Practitioner/pcm-rachel-kim"}}],
    }
    r = await env.call("emma", "POST", "CareTeam", {**own_team, "meta": {"tag": [tag]}})
    c("a patient's maintained-tag team refused", 400 <= r.status_code < 500, r.text[:300])
    r = await env.call("emma", "POST", "CareTeam", own_team)
    if r.status_code == 201:
        made = f"CareTeam/{r.json()['id']}"
        h = await env.call("emma", "POST", "Communication", header(EMMA, [{"reference": made}]))
        c("to a team the patient made", h.status_code == 422, (h.status_code, h.text[:300]))
        rec = await env.get("emma", "Communication/$recipients", patient=PATIENT["emma"])
        c("$recipients skips it", made not in _refs(rec), rec.text[:300])
    else:
        c("a patient's team refused", 400 <= r.status_code < 500, r.text[:300])
    # Off the care team, even with the glass broken: no message into the thread.
    glass = {"X-Break-Glass-Reason": "Patient called the clinic about an urgent refill today"}
    for actor in ("kim", "nurse"):
        r = await env.call(
            actor, "POST", "Communication", message(eleanor, ELEANOR_THREAD), headers=glass
        )
        c(f"{actor} break-glass message", 400 <= r.status_code < 500, (r.status_code, r.text[:300]))
    r = await env.call(
        "kim",
        "POST",
        "Communication",
        message(EMMA, EMMA_THREAD, sender={"reference": "PractitionerRole/role-rn-jessica-moore"}),
    )
    c("kim as jessica's role", r.status_code == 422, (r.status_code, r.text[:300]))
    r = await env.get(
        "nurse",
        "Communication",
        **{"recipient": "CareTeam/careteam-im-nurse-pool", "received:missing": "true"},
    )
    c("another pool's inbox", r.status_code == 200 and not _refs(r), r.text[:300])
    h = await env.get("kim", "Communication/msg-karen-travel-1")
    m = await env.get("kim", "Communication/no-such-msg")
    c.same("kim reads a pool message of a patient not hers", h, m)
    h = await env.call("kim", "POST", "Communication/msg-karen-travel-1/$mark-read")
    m = await env.call("kim", "POST", "Communication/no-such-msg/$mark-read")
    c.same("kim marks it read", h, m)
    r = await env.call("sponsor", "POST", "Communication/msg-liam-sports-form-2/$mark-read")
    c("sponsor marks maria's message read", r.status_code == 403, (r.status_code, r.text[:300]))
    found = await env.get("backend", "Communication", _content=MARK, _count="500")
    stored = [
        e["resource"]["id"]
        for e in found.json().get("entry", [])
        if e["resource"].get("subject", {}).get("reference") == eleanor
    ]
    c("nothing stored for eleanor", not stored, stored)
    print("held", c.held)
    print("\n".join(c.failures))
    assert not c.failures, c.failures
