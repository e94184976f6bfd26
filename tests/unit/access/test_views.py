"""Read-time views (access/views.py): a workflow's view shapes what an admitted resource
looks like on its way out, for the types it names, and never what the post-check admits."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from fhir_server.access.policy import AccessPolicy
from fhir_server.access.screen import screen
from fhir_server.portal.hooks import Workflow, Workflows
from smart_auth import AuthContext
from smart_auth.scopes import parse_scopes

Doc = dict[str, Any]


def _stamp(policy: AccessPolicy, resource: Doc, stored: Any) -> None:
    resource.setdefault("extension", []).append({"url": "urn:test", "valueString": "seen"})


def _policy(views: Workflows, comps: tuple[str, ...] = ("Patient/me",)) -> AccessPolicy:
    auth = AuthContext(
        subject="u",
        client_id="c",
        scopes=tuple(parse_scopes("user/*.rs")),
        scope="user/*.rs",
        token_id="t",
        grant_id="g",
        expires_at=datetime.now(UTC),
        fhir_user="Patient/me",
    )
    return replace(AccessPolicy(auth=auth, compartments=comps), views=views.views)


def _indexer(r: Doc) -> tuple[Doc, list[str]]:
    return {}, [str(r.get("subject", {}).get("reference", ""))]


WORKFLOWS = Workflows(
    (
        Workflow("stamp", frozenset({"MedicationRequest"}), view=_stamp),
        Workflow("plain", frozenset({"MedicationRequest", "Observation"})),
    )
)


def test_views_are_collected_by_type_from_the_workflows_that_have_one() -> None:
    assert set(WORKFLOWS.views) == {"MedicationRequest"}
    assert WORKFLOWS.views["MedicationRequest"] == (_stamp,)


def test_an_admitted_resource_of_a_viewed_type_passes_through_the_view() -> None:
    mine = {"resourceType": "MedicationRequest", "subject": {"reference": "Patient/me"}}
    assert screen(_policy(WORKFLOWS), _indexer, mine, where="read")
    assert mine["extension"] == [{"url": "urn:test", "valueString": "seen"}]


def test_other_types_and_withheld_resources_are_left_alone() -> None:
    obs = {"resourceType": "Observation", "subject": {"reference": "Patient/me"}}
    assert screen(_policy(WORKFLOWS), _indexer, obs, where="read")
    assert "extension" not in obs
    theirs = {"resourceType": "MedicationRequest", "subject": {"reference": "Patient/other"}}
    assert not screen(_policy(WORKFLOWS), _indexer, theirs, where="read")
    assert "extension" not in theirs
