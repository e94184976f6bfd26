"""The write-rule table and its pure decisions, on plain FHIR data (no I/O)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from fhir_server.access import care_team
from fhir_server.access.writes import (
    TABLE,
    bound_violations,
    decide,
    fill_bound,
    load_table,
    may_ever,
    parse_table,
    protected_changes,
    references,
)
from fhir_server.validation import KNOWN_RESOURCE_TYPES

RAW = json.loads(TABLE.read_text())
CAT = "http://terminology.hl7.org/CodeSystem/observation-category"


def broken(edit: Any) -> dict[str, Any]:
    raw = copy.deepcopy(RAW)
    edit(raw)
    return raw


def test_the_shipped_table_loads_with_the_defaults_a_portal_ships() -> None:
    t = load_table(known_types=KNOWN_RESOURCE_TYPES)
    patients = ("self", "basic", "child", "adolescent", "adult-granted", "managed")
    directory = care_team.load_table().directory_types
    for kind in patients:
        assert not may_ever(t, [kind], "Observation", "delete"), kind
        assert not any(may_ever(t, [kind], rt, "create") for rt in directory), kind
        assert not may_ever(t, [kind], "DiagnosticReport", "create"), kind
        assert not may_ever(t, [kind], "CareTeam", "create"), kind
    assert not may_ever(t, ["basic"], "Appointment", "create")
    assert may_ever(t, ["self"], "Communication", "create")
    assert may_ever(t, ["self"], "Consent", "update")
    assert not may_ever(t, ["adult-granted"], "Consent", "update")
    assert not may_ever(t, ["adolescent"], "Communication", "create")
    assert not may_ever(t, ["clinician"], "CareTeam", "create")
    assert not may_ever(t, ["clinician"], "Slot", "update")
    assert may_ever(t, ["system"], "CareTeam", "delete")


@pytest.mark.parametrize(
    "edit",
    [
        lambda r: r["groups"].update(orders=["NoSuchType"]),
        lambda r: r["groups"].update(directory={"same_as": "nowhere"}),
        lambda r: r["actors"]["self"]["allow"][0].update(interactions=["erase"]),
        lambda r: r["actors"]["self"]["allow"][0].update(types=["@no-such-group"]),
        lambda r: r["actors"]["self"].update(references="sometimes"),
        lambda r: r["actors"].pop("clinician"),
        lambda r: r["actors"].update(janitor={"allow": []}),
        lambda r: r["bound"]["elements"].append({"path": "Communication.sender.first()"}),
        lambda r: r["bound"]["elements"].append({"path": "Task.owner.reference", "fill": True}),
        lambda r: r["protected"]["elements"].append(42),
        lambda r: r["actors"]["self"]["allow"][3].update(require={"MedicationRequest.intent": []}),
    ],
)
def test_a_malformed_table_stops_the_server(edit: Any) -> None:
    with pytest.raises((ValueError, KeyError)):
        parse_table(broken(edit), KNOWN_RESOURCE_TYPES)


def test_requirements_name_the_element() -> None:
    t = parse_table(RAW, KNOWN_RESOURCE_TYPES)
    order = {"resourceType": "MedicationRequest", "intent": "order", "status": "active"}
    refusal = decide(t, "self", "MedicationRequest", "create", order)
    assert refusal is not None and refusal.code == "business-rule"
    assert refusal.expression == ("MedicationRequest.intent",)
    assert decide(t, "self", "MedicationRequest", "create", {**order, "intent": "proposal"}) is None
    forbidden = decide(t, "self", "MedicationRequest", "update", order)
    assert forbidden is not None and forbidden.code == "forbidden"
    steps = {"category": [{"coding": [{"system": CAT, "code": "activity"}]}]}
    assert decide(t, "self", "Observation", "create", steps) is None
    lab = {"category": [{"coding": [{"system": CAT, "code": "laboratory"}]}]}
    assert decide(t, "self", "Observation", "create", lab) is not None
    assert decide(t, "self", "Observation", "create", {}) is not None


def test_protected_bound_and_references() -> None:
    t = parse_table(RAW, KNOWN_RESOURCE_TYPES)
    old = {"birthDate": "2011-05-01", "telecom": [], "meta": {"security": []}}
    assert protected_changes(t, "Patient", old, {**old, "telecom": [{"value": "1"}]}) == []
    assert protected_changes(t, "Patient", old, {**old, "birthDate": "2019"}) == [
        "Patient.birthDate"
    ]
    labelled = {**old, "meta": {"security": [{"code": "R"}]}}
    assert protected_changes(t, "Observation", old, labelled) == ["Resource.meta.security"]
    me = frozenset({"Patient/p", "RelatedPerson/rp"})
    msg = fill_bound(t, "Communication", {"resourceType": "Communication"}, "Patient/p")
    assert msg["sender"] == {"reference": "Patient/p"}
    obs = fill_bound(t, "Observation", {}, "Patient/p")
    assert obs["performer"] == [{"reference": "Patient/p"}]
    assert bound_violations(t, "Communication", msg, me) == []
    forged = {**msg, "sender": {"reference": "Practitioner/x"}}
    assert bound_violations(t, "Communication", forged, me) == ["Communication.sender"]
    assert list(references({"a": [{"reference": "X/1"}, {"reference": "#c"}]}, "T")) == [
        ("T.a[0]", "X/1")
    ]
