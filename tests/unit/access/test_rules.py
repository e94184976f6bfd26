"""Compartment rules: the MongoDB filter and the in-memory check say the same thing."""

from __future__ import annotations

import logging

import pytest

from fhir_server.access.family import load_table
from fhir_server.access.policy import AccessPolicy, label_keys, message_keys
from fhir_server.access.rules import CompartmentRule, rules_admit, rules_filter
from fhir_server.access.screen import screen, security_labels
from fhir_server.errors import Forbidden
from fhir_server.search.extract import compartments, index_entries
from fhir_server.search.registry import Registry

ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


@pytest.fixture(scope="module")
def reg() -> Registry:
    return Registry.load_default()


def test_labels_become_security_keys_through_the_search_parser(reg: Registry) -> None:
    keys = label_keys(reg, load_table())
    assert f"_security={ACT}|SEX" in keys
    assert "_security=http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R" in keys
    assert set(message_keys(reg, load_table(), "Patient/t")) >= {
        "sender=Patient/t",
        "recipient=Patient/t",
    }


def test_plain_rules_share_one_indexed_in() -> None:
    rules = (
        CompartmentRule.of("Patient/me", "self", None, ()),
        CompartmentRule.of("Patient/kid", "child", None, ("_security=s|R",)),
        CompartmentRule.of("Patient/teen", "adolescent", frozenset({"Appointment"}), ("x",)),
    )
    assert rules_filter(rules, "Observation") == {
        # The compartments of the alternatives, as a superset clause SecantusDB looks up.
        "comp": {"$in": ["Patient/kid", "Patient/me"]},
        "$or": [
            {"comp": {"$in": ["Patient/me"]}},
            {"comp": "Patient/kid", "ix.k": {"$nin": ["_security=s|R"]}},
        ],
    }
    assert rules_filter(rules, "*")["$or"][2] == {
        "comp": "Patient/teen",
        "rt": {"$in": ["Appointment"]},
        "ix.k": {"$nin": ["x"]},
    }
    assert rules_filter((), "Observation") == {"_id": {"$in": []}}


def _resource(security: list[dict] | None = None, rt: str = "Observation", **extra) -> dict:
    r = {"resourceType": rt, "id": "o1", **extra}
    if rt == "Observation":
        r.setdefault("status", "final")
        r.setdefault("code", {"text": "x"})
        r.setdefault("subject", {"reference": "Patient/teen"})
    if security:
        r["meta"] = {"security": security}
    return r


@pytest.mark.parametrize(
    ("resource", "visible"),
    [
        (_resource(), False),  # Observation is not an adolescent type
        (
            _resource(
                rt="Appointment",
                status="booked",
                participant=[{"actor": {"reference": "Patient/teen"}, "status": "accepted"}],
            ),
            True,
        ),
        (
            _resource(
                [{"system": ACT, "code": "SEX"}],
                rt="Appointment",
                status="booked",
                participant=[{"actor": {"reference": "Patient/teen"}, "status": "accepted"}],
            ),
            False,
        ),
    ],
)
def test_memory_check_matches_the_rule(reg: Registry, resource: dict, visible: bool) -> None:
    table = load_table()
    band = table.bands["adolescent"]
    rule = CompartmentRule.of("Patient/teen", "adolescent", band.types, label_keys(reg, table))
    ix = index_entries(resource, reg)
    comps = compartments(resource, reg)
    assert rules_admit((rule,), resource["resourceType"], comps, ix["k"]) is visible


def _policy(rules: tuple[CompartmentRule, ...]) -> AccessPolicy:
    from datetime import UTC, datetime

    from smart_auth import AuthContext
    from smart_auth.scopes import parse_scopes

    auth = AuthContext(
        subject="u",
        client_id="c",
        scopes=tuple(parse_scopes("user/*.cruds")),
        scope="user/*.cruds",
        token_id="t",
        grant_id="g",
        expires_at=datetime.now(UTC),
        fhir_user="Patient/me",
    )
    return AccessPolicy(auth=auth, compartments=tuple(r.compartment for r in rules), rules=rules)


def test_post_check_withholds_and_logs_loudly(reg: Registry, caplog) -> None:
    policy = _policy((CompartmentRule.of("Patient/me", "self", None, ()),))

    def indexer(r: dict) -> tuple[dict, list[str]]:
        return index_entries(r, reg), compartments(r, reg)

    mine = _resource(subject={"reference": "Patient/me"})
    other = _resource(subject={"reference": "Patient/other"})
    with caplog.at_level(logging.ERROR, logger="fhir_server.access"):
        assert screen(policy, indexer, mine, where="test")
        assert not caplog.records
        assert not screen(policy, indexer, other, where="test")
    assert "access post-check fired" in caplog.text


def test_a_proxy_may_not_touch_labels(reg: Registry) -> None:
    rules = (
        CompartmentRule.of("Patient/me", "self", None, ()),
        CompartmentRule.of("Patient/kid", "child", None, ("_security=s|R",)),
    )
    policy = _policy(rules)
    label = frozenset({(ACT, "N")})
    # Own compartment: the patient may label their own records.
    policy.check_write(["Patient/me"], resource_type="Observation", labels_after=label)
    # A dependent's: adding, changing or removing a label is refused.
    for before, after in (
        (frozenset(), label),
        (label, frozenset()),
        (label, frozenset({(ACT, "M")})),
    ):
        with pytest.raises(Forbidden, match="labels"):
            policy.check_write(
                ["Patient/kid"],
                resource_type="Observation",
                labels_before=before,
                labels_after=after,
            )
    policy.check_write(
        ["Patient/kid"], resource_type="Observation", labels_before=label, labels_after=label
    )
    # A hidden key (a sensitive label) makes the write unreadable, hence refused.
    with pytest.raises(Forbidden):
        policy.check_write(["Patient/kid"], resource_type="Observation", keys=["_security=s|R"])
    with pytest.raises(Forbidden):
        policy.check_write(["Patient/elsewhere"], resource_type="Observation")


def test_security_labels_are_pairs() -> None:
    assert security_labels({"meta": {"security": [{"system": "s", "code": "R"}]}}) == {("s", "R")}
    assert security_labels({}) == frozenset()
