"""smart_auth/policy.py and the tables in profiles/access/."""

from __future__ import annotations

import json

import pytest

from smart_auth.config import POLICY_DIR
from smart_auth.policy import AccessPolicy
from smart_auth.scopes import allows, parse_scopes


@pytest.fixture(scope="module")
def policy() -> AccessPolicy:
    return AccessPolicy.load(POLICY_DIR)


def test_levels_and_lockout_defaults(policy):
    assert set(policy.levels) == {"dslogon-basic", "dslogon-premium", "managed", "cac", "piv"}
    assert policy.lockout.max_failures == 5
    assert policy.lockout.lock_seconds == 30 * 86400


def test_basic_reads_four_types_and_writes_nothing(policy):
    capped = policy.level("dslogon-basic").cap(list(parse_scopes("patient/*.cruds user/*.*")))
    for rt in ("Patient", "Appointment", "Immunization", "AllergyIntolerance"):
        assert allows(capped, rt, "read") and allows(capped, rt, "search")
        assert not allows(capped, rt, "create") and not allows(capped, rt, "update")
    for rt in ("Observation", "Communication", "MedicationRequest"):
        assert not allows(capped, rt, "read")


@pytest.mark.parametrize("level", ["dslogon-premium", "cac", "piv", "managed"])
def test_full_levels_keep_everything(policy, level):
    requested = list(parse_scopes("patient/*.cruds user/Observation.rs"))
    assert policy.level(level).cap(requested) == requested


def test_no_level_grants_system_scopes(policy):
    for level in policy.levels.values():
        assert level.cap(list(parse_scopes("system/*.rs"))) == []


def test_patient_choices(policy):
    acts = ("Patient/kid",)
    assert policy.level("dslogon-premium").patient_choices("Patient/me", acts) == [
        "Patient/me",
        "Patient/kid",
    ]
    assert policy.level("managed").patient_choices("Patient/me", acts) == ["Patient/kid"]
    assert policy.level("cac").patient_choices("Practitioner/doc", ()) == []


def test_overrides_and_bad_tables(tmp_path):
    for name in ("login_levels.json", "lockout.json"):
        (tmp_path / name).write_text((POLICY_DIR / name).read_text())
    assert AccessPolicy.load(tmp_path, max_failures=3, lock_days=1).lockout.max_failures == 3
    levels = json.loads((tmp_path / "login_levels.json").read_text())
    levels["levels"]["cac"]["ceiling"] = ["system/*.rs"]
    (tmp_path / "login_levels.json").write_text(json.dumps(levels))
    with pytest.raises(ValueError):
        AccessPolicy.load(tmp_path)
    with pytest.raises(ValueError):
        AccessPolicy.load(POLICY_DIR).level("dslogon-gold")
