"""`$export` under every actor of the leak matrix: the export shows exactly what the policy
shows, never more.

Actors, targets, tokens and expectations all come from tests/integration/access/
test_leak_matrix.py (generated there from profiles/access/family.json and the seed's declared
facts); nothing here is read from the server. One system-level export per actor, with no
`_type`: types the token is not granted are left out, everything else is narrowed by the
policy and post-checked.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from seed_data.directory import PEOPLE
from seed_data.identities import UNLINKED_ID
from tests.integration.access.test_leak_matrix import (
    ACTORS,
    LABELS,
    PATIENT,
    TARGETS,
    Matrix,
    Target,
    band_of,
    expected_visible,
    matrix,  # noqa: F401  (the module-scoped fixture, used by name)
    type_granted,
)

KEY_OF = (
    {f"Patient/{pid}": key for key, pid in PATIENT.items()}
    | {f"Patient/{p.id}": key for key, p in PEOPLE.items()}
    # The unlinked beneficiary (seed_data/identities.py): nobody's relative.
    | {f"Patient/{UNLINKED_ID}": "ana"}
)
Exported = dict[str, dict[str, Any]]


async def _export(m: Matrix, token: str) -> Exported:
    http, auth = m.server.http, {"Authorization": f"Bearer {token}"}
    r = await http.get("/fhir/$export", headers={**auth, "Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    location = r.headers["content-location"]
    for _ in range(2400):  # 2 minutes: the machine is shared
        r = await http.get(location, headers=auth)
        if r.status_code != 202:
            break
        await asyncio.sleep(0.05)
    assert r.status_code == 200, r.text
    out: Exported = {}
    for item in r.json()["output"]:
        f = await http.get(item["url"], headers=auth)
        assert f.status_code == 200, f.text
        for line in f.content.splitlines():
            res = orjson.loads(line)
            out[f"{res['resourceType']}/{res['id']}"] = res
    return out


@pytest.fixture(scope="module")
def exported() -> dict[str, Exported]:
    """One export per actor, shared by that actor's tests."""
    return {}


async def export_of(m: Matrix, exported: dict[str, Exported], actor: str) -> Exported:
    if actor not in exported:
        exported[actor] = await _export(m, m.tokens[actor])
    return exported[actor]


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.ref)
@pytest.mark.parametrize("actor", list(ACTORS))
async def test_target_exported_iff_visible(
    matrix: Matrix,  # noqa: F811
    exported: dict[str, Exported],
    actor: str,
    target: Target,
) -> None:
    out = await export_of(matrix, exported, actor)
    expected = expected_visible(actor, target) and type_granted(actor, target.rt)
    assert (target.ref in out) == expected


def _patients(node: Any) -> set[str]:
    """Every `Patient/<id>` a resource refers to: the compartments it can possibly be in."""
    found: set[str] = set()
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str) and ref.startswith("Patient/"):
            found.add("/".join(ref.split("/")[:2]))
        for v in node.values():
            found |= _patients(v)
    elif isinstance(node, list):
        for v in node:
            found |= _patients(v)
    return found


def _labelled(res: dict[str, Any]) -> bool:
    security = (res.get("meta") or {}).get("security") or []
    return any((s.get("system"), s.get("code")) in LABELS for s in security)


def _admits(actor: str, patient: str, rt: str, labelled: bool) -> bool:
    key = KEY_OF.get(patient)
    band = band_of(actor, key) if key is not None else None
    if band is None:
        return False
    if band["types"] != "*" and rt not in band["types"]:
        return False
    return not (labelled and band["hide_labelled"])


@pytest.mark.parametrize("actor", list(ACTORS))
async def test_nothing_from_a_compartment_the_actor_may_not_see(
    matrix: Matrix,  # noqa: F811
    exported: dict[str, Exported],
    actor: str,
) -> None:
    out = await export_of(matrix, exported, actor)
    assert out, "every actor sees something"
    leaks = []
    for ref, res in out.items():
        rt = res["resourceType"]
        if not type_granted(actor, rt):
            leaks.append(f"{ref}: type not granted")
            continue
        patients = _patients(res) | ({ref} if rt == "Patient" else set())
        if not patients:
            continue  # not patient data (a Practitioner, an Organization...)
        # A resource is in a compartment only if it refers to that patient: at least one of
        # the patients it names must be one whose band shows this type and these labels.
        if not any(_admits(actor, p, rt, _labelled(res)) for p in patients):
            leaks.append(f"{ref}: names only {sorted(patients)}")
    assert not leaks, leaks


FAMILY_GROUP = "group-carter-family"
FAMILY = {"james", "maria", "sophia", "liam", "daniel", "emma"}  # seed_data/README.md


@pytest.mark.parametrize("actor", list(ACTORS))
async def test_group_export_shows_no_more_than_the_system_export(
    matrix: Matrix,  # noqa: F811
    exported: dict[str, Exported],
    actor: str,
) -> None:
    """A Group export is the same policy on fewer compartments: never anything the actor's
    system export lacks, never a target of someone outside the family."""
    everything = await export_of(matrix, exported, actor)
    http, auth = matrix.server.http, {"Authorization": f"Bearer {matrix.tokens[actor]}"}
    r = await http.get(
        f"/fhir/Group/{FAMILY_GROUP}/$export", headers={**auth, "Prefer": "respond-async"}
    )
    if r.status_code != 202:
        # A Group the actor may not read answers like a missing one, or 403 when the token
        # grants no Group access at all; either way nothing is exported.
        assert r.status_code == (403 if not type_granted(actor, "Group") else 404), r.text
        return
    for _ in range(2400):  # 2 minutes: the machine is shared
        s = await http.get(r.headers["content-location"], headers=auth)
        if s.status_code != 202:
            break
        await asyncio.sleep(0.05)
    assert s.status_code == 200, s.text
    group: Exported = {}
    for item in s.json()["output"]:
        for line in (await http.get(item["url"], headers=auth)).content.splitlines():
            res = orjson.loads(line)
            group[f"{res['resourceType']}/{res['id']}"] = res
    # Audit events of the requests made since the first export are new: leave them out.
    assert {r for r in group if not r.startswith("AuditEvent/")} <= set(everything)
    outsiders = {t.ref for t in TARGETS if t.owner not in FAMILY}
    assert not (set(group) & outsiders)
    insiders = {t.ref for t in TARGETS if t.owner in FAMILY}
    assert set(group) & insiders == set(everything) & insiders
