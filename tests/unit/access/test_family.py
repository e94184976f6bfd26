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


CONSENT = {
    "resourceType": "Consent",
    "status": "active",
    "patient": {"reference": "Patient/d"},
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
