"""smart_auth/scopes.py: SMART 2.2 scope grammar, matching and narrowing."""

from __future__ import annotations

import pytest

from smart_auth.scopes import (
    InvalidScope,
    Scope,
    allows,
    covers,
    narrow,
    parse_scope,
    parse_scopes,
    query_filters,
    render,
)

LAB = "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory"


@pytest.mark.parametrize(
    ("text", "perms", "version"),
    [
        ("patient/Observation.read", "rs", 1),
        ("patient/Observation.write", "cud", 1),
        ("patient/Observation.*", "cruds", 1),
        ("user/*.read", "rs", 1),
        ("system/*.cruds", "cruds", 2),
        ("patient/Observation.rs", "rs", 2),
        ("patient/Observation.c", "c", 2),
        ("user/Appointment.cu", "cu", 2),
        ("patient/Patient.r", "r", 2),
    ],
)
def test_parse_v1_and_v2(text, perms, version):
    scope = parse_scope(text)
    assert scope is not None
    assert scope.permissions == frozenset(perms)
    assert scope.version == version
    assert str(scope) == text


def test_parse_query_qualified():
    scope = parse_scope(LAB)
    assert scope == Scope(
        "patient",
        "Observation",
        frozenset("rs"),
        (("category", "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"),),
    )


@pytest.mark.parametrize(
    "text", ["openid", "fhirUser", "launch/patient", "offline_access", "launch"]
)
def test_non_resource_scopes_are_none(text):
    assert parse_scope(text) is None


@pytest.mark.parametrize(
    "text",
    [
        "patient/Observation.sr",  # out of order
        "patient/Observation.rr",
        "patient/Observation.x",
        "patient/Observation.",
        "patient/observation.rs",  # resource types start upper case
        "patient/Observation.read?category=x",  # v1 cannot carry a query
        "patient/Observation.rs?",
        "patient/Observation.rs?category=",
        "admin/Observation.rs",
    ],
)
def test_invalid_scopes(text):
    if text.startswith("admin/"):
        assert parse_scope(text) is None
        return
    with pytest.raises(InvalidScope):
        parse_scope(text)


def test_parse_scopes_drops_malformed_unless_strict():
    assert [str(s) for s in parse_scopes("openid patient/X.sr patient/Y.rs")] == ["patient/Y.rs"]
    with pytest.raises(InvalidScope):
        parse_scopes("patient/X.sr", strict=True)


def test_allows_each_interaction():
    scopes = parse_scopes("patient/Observation.rs user/Appointment.cu patient/*.d")
    assert allows(scopes, "Observation", "read")
    assert allows(scopes, "Observation", "search")
    assert not allows(scopes, "Observation", "create")
    assert allows(scopes, "Appointment", "create")
    assert allows(scopes, "Appointment", "update")
    assert not allows(scopes, "Appointment", "read")
    assert allows(scopes, "Condition", "delete")
    assert allows(scopes, "Appointment", "update", context="user")
    assert not allows(scopes, "Appointment", "update", context="patient")
    assert not allows((), "Patient", "read")
    with pytest.raises(ValueError):
        allows(scopes, "Patient", "frobnicate")


def test_v1_read_allows_search_and_write_allows_cud():
    scopes = parse_scopes("patient/Observation.read patient/Condition.write")
    assert allows(scopes, "Observation", "search")
    assert not allows(scopes, "Observation", "update")
    assert all(allows(scopes, "Condition", i) for i in ("create", "update", "delete"))
    assert not allows(scopes, "Condition", "read")


def test_query_filters():
    lab = parse_scopes(LAB)
    assert allows(lab, "Observation", "search")
    assert query_filters(lab, "Observation", "search") == [
        [("category", "http://terminology.hl7.org/CodeSystem/observation-category|laboratory")]
    ]
    vitals = parse_scopes(LAB + " patient/Observation.rs?category=vital-signs")
    assert len(query_filters(vitals, "Observation", "read")) == 2
    unrestricted = parse_scopes(LAB + " patient/Observation.r")
    assert query_filters(unrestricted, "Observation", "read") == []
    assert len(query_filters(unrestricted, "Observation", "search")) == 1


def test_covers_and_narrow():
    star = parse_scope("patient/*.cruds")
    assert star is not None
    assert covers(star, parse_scope(LAB))
    assert not covers(parse_scope(LAB), star)
    ceiling = parse_scopes("patient/Patient.rs patient/Appointment.rs")
    got = narrow(list(parse_scopes("patient/*.read")), list(ceiling))
    assert [str(s) for s in got] == ["patient/Patient.read", "patient/Appointment.read"]
    got = narrow(list(parse_scopes("patient/*.cruds")), list(ceiling))
    assert [str(s) for s in got] == ["patient/Patient.rs", "patient/Appointment.rs"]
    assert narrow(list(parse_scopes("patient/Observation.rs")), list(ceiling)) == []
    assert narrow(list(parse_scopes("patient/*.write")), list(ceiling)) == []
    assert narrow(list(parse_scopes("user/Patient.rs")), list(ceiling)) == []


def test_narrow_keeps_covered_scopes_verbatim_and_dedupes():
    ceiling = list(parse_scopes("patient/*.cruds"))
    requested = list(parse_scopes("patient/Observation.read " + LAB + " patient/Observation.rs"))
    got = [str(s) for s in narrow(requested, ceiling)]
    assert got == ["patient/Observation.read"]


def test_render_v2_order():
    scope = Scope("user", "Patient", frozenset("sdr"))
    assert render(scope) == "user/Patient.rds"
    assert render(Scope("user", "Patient", frozenset("rs")), prefer_v1=True) == "user/Patient.read"


def test_query_types_names_the_types_a_scope_query_reads():
    from smart_auth.scopes import query_types

    q = (
        ("_has:Observation:patient:_has:AuditEvent:entity:type", "x"),
        ("general-practitioner:Practitioner.name", "Kim"),
        ("subject.name", "x"),
        ("_type", "Condition,Procedure"),
        ("code", "http://loinc.org|1"),
    )
    assert query_types(q) == {
        "Observation",
        "AuditEvent",
        "Practitioner",
        "*",
        "Condition",
        "Procedure",
    }
    assert query_types(None) == frozenset()


def test_a_scope_reading_types_beyond_the_ceiling_is_dropped():
    from smart_auth.scopes import parse_scopes, reads_within

    ceiling = parse_scopes("user/Patient.rs user/Immunization.rs")
    has = parse_scopes("user/Patient.rs?_has:Observation:patient:code=x")[0]
    ok = parse_scopes("user/Patient.rs?_has:Immunization:patient:vaccine-code=x")[0]
    untyped = parse_scopes("user/Immunization.rs?patient.name=x")[0]
    assert not reads_within(has, ceiling)
    assert reads_within(ok, ceiling)
    assert not reads_within(untyped, ceiling)
    assert reads_within(untyped, parse_scopes("user/*.rs"))
