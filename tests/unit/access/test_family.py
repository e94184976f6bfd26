"""The family table and the relationship rules, on plain FHIR data (no I/O)."""

from __future__ import annotations

import copy
import json
from datetime import date

import pytest

from fhir_server.access.family import (
    TABLE,
    active_relatedperson,
    age_on,
    consent_grants,
    is_guardian,
    load_table,
    parse_table,
)

TODAY = date(2026, 11, 22)
RAW = json.loads(TABLE.read_text())


def test_the_shipped_table_loads() -> None:
    t = load_table()
    assert (t.restricted_from, t.adult_from) == (12, 18)
    assert t.bands["adolescent"].types == {
        "Patient",
        "Appointment",
        "Immunization",
        "AllergyIntolerance",
    }
    assert t.bands["child"].types is None
    assert ("http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "R") in t.labels
    assert ("http://terminology.hl7.org/CodeSystem/v3-ActCode", "STD") in t.labels
    assert t.message_params == {"Communication": ("sender", "recipient")}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r["ages"].update(restricted_from=19), "ages"),
        (lambda r: r["bands"]["adolescent"].update(types=42), "types"),
        (lambda r: r.update(sensitive_labels=[]), "sensitive_labels"),
        (lambda r: r["bands"].pop("child"), "child"),
    ],
)
def test_a_malformed_table_fails_loudly(mutate, message: str) -> None:
    raw = copy.deepcopy(RAW)
    mutate(raw)
    with pytest.raises((ValueError, KeyError), match=message):
        parse_table(raw)


@pytest.mark.parametrize(
    ("birth", "age"),
    [
        ("2014-11-22", 12),  # the 12th birthday is today
        ("2014-11-23", 11),
        ("2008-11-22", 18),
        ("2008-11-23", 17),
        ("2011", 15),  # partial dates count from their earliest day (oldest age)
        ("2011-12", 14),
        (None, None),
        ("garbage", None),
    ],
)
def test_age_is_computed_on_the_request_day(birth: str | None, age: int | None) -> None:
    assert age_on(birth, TODAY) == age


def test_bands_follow_the_thresholds() -> None:
    t = load_table()
    assert [t.band_for_age(a) for a in (0, 11, 12, 17, 18, 80)] == [
        "child",
        "child",
        "adolescent",
        "adolescent",
        "adult-granted",
        "adult-granted",
    ]


CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
CONSENT = {
    "resourceType": "Consent",
    "status": "active",
    "patient": {"reference": "Patient/d"},
    "scope": {"coding": [{"system": CONSENT_SCOPE, "code": "patient-privacy"}]},
    "provision": {
        "type": "permit",
        "period": {"start": "2026-01-01"},
        "actor": [{"reference": {"reference": "RelatedPerson/rp"}}],
    },
}


@pytest.mark.parametrize(
    ("change", "grants"),
    [
        ({}, True),
        ({"status": "inactive"}, False),  # revoked
        ({"status": "proposed"}, False),
        ({"patient": {"reference": "Patient/other"}}, False),
        ({"provision": {**CONSENT["provision"], "type": "deny"}}, False),
        ({"provision": {**CONSENT["provision"], "period": {"end": "2026-11-21"}}}, False),
        ({"provision": {**CONSENT["provision"], "period": {"start": "2026-12-01"}}}, False),
        ({"provision": {**CONSENT["provision"], "actor": []}}, False),
        # A research consent is no proxy grant.
        ({"scope": {"coding": [{"system": CONSENT_SCOPE, "code": "research"}]}}, False),
        ({"scope": None}, False),
    ],
)
def test_only_an_active_permit_consent_naming_the_proxy_grants(change: dict, grants: bool) -> None:
    consent = {**CONSENT, **change}
    assert consent_grants(consent, "Patient/d", {"RelatedPerson/rp"}, TODAY) is grants


def test_relatedperson_must_be_active_and_a_guardian() -> None:
    t = load_table()
    rp = {
        "active": True,
        "relationship": [{"coding": [{"system": t.guardian_system, "code": "MTH"}]}],
    }
    assert active_relatedperson(rp, TODAY) and is_guardian(rp, t)
    assert not active_relatedperson({**rp, "active": False}, TODAY)
    assert not active_relatedperson({**rp, "period": {"end": "2020-01-01"}}, TODAY)
    neighbour = {"relationship": [{"coding": [{"system": t.guardian_system, "code": "NBOR"}]}]}
    assert not is_guardian(neighbour, t)


RTYPES = "http://hl7.org/fhir/resource-types"


def _with(**provision: object) -> dict:
    return {**CONSENT, "provision": {**CONSENT["provision"], **provision}}


def test_consent_classes_and_nested_exceptions_narrow_the_grant() -> None:
    from fhir_server.access.consent import Grant, grant_of

    actors = {"RelatedPerson/rp"}
    assert grant_of(CONSENT, "Patient/d", actors, TODAY) == Grant(None)
    only = _with(**{"class": [{"system": RTYPES, "code": "Immunization"}]})
    assert grant_of(only, "Patient/d", actors, TODAY) == Grant(frozenset({"Immunization"}))
    deny = {"type": "deny", "class": [{"system": RTYPES, "code": "Condition"}]}
    assert grant_of(_with(provision=[deny]), "Patient/d", actors, TODAY) == Grant(
        None, frozenset({"Condition"})
    )
    # An exception for another actor or out of its period does not apply.
    other = {**deny, "actor": [{"reference": {"reference": "RelatedPerson/x"}}]}
    past = {**deny, "period": {"end": "2026-01-02"}}
    assert grant_of(_with(provision=[other, past]), "Patient/d", actors, TODAY) == Grant(None)
    # A deny of everything grants nothing; a permit inside gives a class back.
    back = {"type": "deny", "provision": [{"type": "permit", "class": deny["class"]}]}
    assert grant_of(_with(provision=[{"type": "deny"}]), "Patient/d", actors, TODAY) is None
    assert grant_of(_with(provision=[back]), "Patient/d", actors, TODAY) == Grant(
        frozenset({"Condition"})
    )


def test_grants_union() -> None:
    from fhir_server.access.consent import Grant

    a, b = Grant(None, frozenset({"Condition", "Observation"})), Grant(frozenset({"Condition"}))
    assert a.union(b) == Grant(None, frozenset({"Observation"}))
    assert b.union(Grant(frozenset({"Immunization"}))) == Grant(
        frozenset({"Condition", "Immunization"})
    )


def test_unsupported_provision_elements_are_named() -> None:
    from fhir_server.access.consent import unsupported
    from fhir_server.validation.findings import to_expression

    assert unsupported(CONSENT) == []
    bad = _with(
        securityLabel=[{"code": "R"}],
        provision=[{"type": "deny", "code": [{"text": "x"}], "class": [{"code": "Condition"}]}],
    )
    assert [to_expression("Consent", p) for p in unsupported(bad)] == [
        "Consent.provision.securityLabel",
        "Consent.provision.provision[0].code",
        "Consent.provision.provision[0].class[0]",
    ]
