"""`$everything` under the access policy: the leak matrix's actors and targets.

Expectations come from the matrix's own declarations (tests/integration/access/
test_leak_matrix.py: `ACTORS`, `TARGETS`, `PATIENT`, `expected_visible`, `type_granted`),
which derive them from `profiles/access/family.json` and the seed's declared facts, so this
test follows any change there. A Patient the actor may not see must answer exactly as a
missing one; a hidden resource must never appear, on any page.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.integration.access.test_leak_matrix import (
    ACTORS,
    PATIENT,
    TARGETS,
    Matrix,
    Target,
    expected_visible,
    matrix,
    type_granted,
)

__all__ = ["matrix"]  # the module-scoped fixture: seed, probes and one real token per actor

HINTS = ("suppress", "hidden", "label", "consent", "restricted", "sensitive")
PAGE = "20"  # small pages, so every answer crosses `next` links under the policy
# `$everything` needs `search` on Patient: actors whose scopes do not grant it (the matrix's
# query-qualified scope actors) answer 403 before any record is read.
ACTORS_WITH_PATIENTS = [a for a in ACTORS if type_granted(a, "Patient")]


def owner_visible(actor: str, owner: str) -> bool:
    """Whether `actor` may see `owner`'s Patient resource, asked of the matrix's rules."""
    patient = Target(owner, "Patient", PATIENT[owner])
    return expected_visible(actor, patient) and type_granted(actor, "Patient")


def shown(actor: str, t: Target) -> bool:
    return expected_visible(actor, t) and type_granted(actor, t.rt)


async def _everything(
    m: Matrix, actor: str, url: str, count: str = PAGE
) -> tuple[list[str], httpx.Response]:
    """Every entry across all pages, matches first, then includes (which may repeat from
    page to page), and the first answer."""
    token = m.tokens[actor]
    first = await m.server.get(token, url, _count=count)
    if first.status_code != 200:
        return [], first
    seen: dict[str, list[str]] = {"match": [], "include": []}
    body: dict[str, Any] = first.json()
    for _ in range(200):
        for e in body.get("entry", []):
            mode = e.get("search", {}).get("mode")
            if mode in seen:
                seen[mode].append(f"{e['resource']['resourceType']}/{e['resource']['id']}")
        link = next((lk["url"] for lk in body["link"] if lk["relation"] == "next"), None)
        if link is None:
            assert len(seen["match"]) == len(set(seen["match"])), "a match repeated"
            # Includes are narrowed per type too: none of a type the token is not granted.
            denied = [r for r in seen["include"] if not type_granted(actor, r.split("/")[0])]
            assert not denied, denied
            return seen["match"] + seen["include"], first
        r = await m.server.http.get(link, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text[:300]
        body = r.json()
    raise AssertionError("runaway paging")


@pytest.mark.parametrize("actor", sorted(set(ACTORS) - set(ACTORS_WITH_PATIENTS)))
async def test_everything_without_patient_search_is_403(matrix: Matrix, actor: str) -> None:
    for url in (f"Patient/{PATIENT['sophia']}/$everything", "Patient/$everything"):
        r = await matrix.server.get(matrix.tokens[actor], url)
        assert r.status_code == 403, r.text[:300]


def _same_as_missing(hidden: httpx.Response, missing: httpx.Response) -> None:
    assert hidden.status_code == missing.status_code == 404, (hidden.text, missing.text)
    h, m = hidden.json(), missing.json()
    assert [i["code"] for i in h["issue"]] == [i["code"] for i in m["issue"]]
    assert h["resourceType"] == m["resourceType"] == "OperationOutcome"
    text = hidden.text.lower()
    for word in HINTS:
        assert word not in text, hidden.text


OWNERS = sorted({t.owner for t in TARGETS})


@pytest.mark.parametrize("owner", OWNERS)
@pytest.mark.parametrize("actor", ACTORS_WITH_PATIENTS)
async def test_instance_everything_follows_the_matrix(
    matrix: Matrix, actor: str, owner: str
) -> None:
    pid = PATIENT[owner]
    seen, first = await _everything(matrix, actor, f"Patient/{pid}/$everything")
    m = matrix
    if not owner_visible(actor, owner):
        token = m.tokens[actor]
        missing = await m.server.get(token, f"Patient/no-such-{pid}/$everything", _count=PAGE)
        _same_as_missing(first, missing)
        # And exactly as a read of a missing Patient.
        _same_as_missing(first, await m.server.get(token, f"Patient/no-such-{pid}"))
        m.checks[0] += 1
        return
    assert first.status_code == 200, first.text[:300]
    assert seen[0] == f"Patient/{pid}"
    failures = []
    for t in TARGETS:
        if t.owner != owner:
            continue
        m.checks[0] += 1
        if (t.ref in seen) != shown(actor, t):
            failures.append(f"{t.ref}: expected visible={shown(actor, t)}")
    # Nothing from another owner's record leaks in through the includes either, unless
    # the actor may see it there too.
    for t in TARGETS:
        if t.owner != owner and t.ref in seen:
            failures.append(f"{t.ref} of {t.owner} appeared in {owner}'s record")
    assert not failures, failures


@pytest.mark.parametrize("actor", ACTORS_WITH_PATIENTS)
async def test_type_everything_shows_only_what_the_actor_may_see(
    matrix: Matrix, actor: str
) -> None:
    # Larger pages: the type level spans every visible record (still several pages).
    seen, first = await _everything(matrix, actor, "Patient/$everything", count="100")
    assert first.status_code == 200, first.text[:300]
    failures = []
    for owner, pid in PATIENT.items():
        matrix.checks[0] += 1
        if f"Patient/{pid}" in seen and not owner_visible(actor, owner):
            failures.append(f"Patient/{pid} is not the actor's to see")
    for t in TARGETS:
        matrix.checks[0] += 1
        if (t.ref in seen) != shown(actor, t):
            failures.append(f"{t.ref}: expected visible={shown(actor, t)}")
    assert not failures, failures
