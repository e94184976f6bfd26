"""The AuditEvent shapes (no I/O): labels copied from the resource, the patients a query
names, break the glass, and the login events of the authorization server."""

from __future__ import annotations

import base64

from fhir_server.access.audit import (
    ACT_REASON,
    CONFIDENTIALITY,
    DCM,
    AuditRecord,
    audit_event,
    login_event,
    query_patients,
    sensitive_labels,
)

ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
PSY = {"system": ACT, "code": "PSY"}


def codes(event: dict) -> set[tuple[str, str]]:
    return {(c["system"], c["code"]) for c in event["meta"]["security"]}


def test_break_the_glass_reason_becomes_purpose_of_event() -> None:
    rec = AuditRecord("GET", ["Observation", "1"], status=200, fhir_user="Practitioner/p")
    assert "purposeOfEvent" not in audit_event(rec)
    rec.break_glass_reason = "unconscious patient in the ED"
    purpose = audit_event(rec)["purposeOfEvent"]
    assert purpose == [
        {
            "coding": [{"system": ACT_REASON, "code": "BTG", "display": "break the glass"}],
            "text": "unconscious patient in the ED",
        }
    ]


def test_only_sensitive_labels_are_copied_and_r_stays() -> None:
    resource = {
        "resourceType": "Observation",
        "meta": {
            "security": [
                PSY,
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
                    "code": "HTEST",
                },
            ]
        },
    }
    labels = sensitive_labels(resource)
    assert labels == [PSY]  # HTEST is not a sensitivity label: it hides nothing
    rec = AuditRecord("GET", ["Observation", "1"], status=200, labels=labels)
    assert codes(audit_event(rec)) == {(CONFIDENTIALITY, "R"), (ACT, "PSY")}
    assert codes(audit_event(rec, label_all=False)) == {(ACT, "PSY")}
    rec.labels = [{"system": CONFIDENTIALITY, "code": "R"}]
    assert audit_event(rec)["meta"]["security"] == [{"system": CONFIDENTIALITY, "code": "R"}]


def test_patients_go_where_the_patient_search_parameter_finds_them() -> None:
    rec = AuditRecord("GET", ["Observation", "o1"], status=200, patients=["Patient/a", "Patient/b"])
    rec.patient = "Patient/a"  # the launch patient, the same one: listed once
    whats = [e.get("what", {}).get("reference") for e in audit_event(rec)["entity"]]
    assert whats == ["Patient/a", "Patient/b", "Observation/o1"]


def test_query_patients_are_the_callers_own_words() -> None:
    assert query_patients(["Observation"], [("patient", "p1")]) == ["Patient/p1"]
    assert query_patients(["Observation"], [("subject", "Patient/p2,Group/g")]) == ["Patient/p2"]
    assert query_patients(["Observation"], [("subject:Patient", "p3")]) == ["Patient/p3"]
    assert query_patients(["Observation"], [("subject", "g1")]) == []  # type unknown
    assert query_patients(["Patient"], [("_id", "p4")]) == ["Patient/p4"]
    assert query_patients(["Observation"], [("_id", "o1")]) == []
    assert query_patients(["Patient", "p5", "$everything"], []) == ["Patient/p5"]
    assert query_patients(["Observation"], [("patient.name", "Smith")]) == []
    assert query_patients(["Observation"], [("code", "x")]) == []
    assert query_patients(["Observation"], [("patient:missing", "true")]) == []
    assert query_patients(["Observation"], [("subject:identifier", "x|1")]) == []


def test_query_entity_is_base64_of_the_query() -> None:
    rec = AuditRecord("GET", ["Observation"], query="patient=p1&code=x", status=200)
    query = next(e for e in audit_event(rec)["entity"] if e["role"]["code"] == "24")
    assert base64.b64decode(query["query"]).decode() == "patient=p1&code=x"


def test_login_success_names_the_user_client_and_level() -> None:
    event = login_event(
        {
            "outcome": "success",
            "account": True,
            "username": "james.carter",
            "fhirUser": "Patient/p1",
            "level": "dslogon-premium",
            "method": "auto",
            "client_id": "app-1",
            "ip": "127.0.0.1",
        }
    )
    assert event["type"]["code"] == "110114" and event["type"]["system"] == DCM
    assert event["subtype"][0]["code"] == "110122"
    assert event["outcome"] == "0"
    user, client, _server = event["agent"]
    assert user["who"] == {"reference": "Patient/p1"} and user["requestor"] is True
    assert user["network"] == {"address": "127.0.0.1", "type": "2"}
    assert client["who"] == {"display": "app-1"}
    assert event["entity"][0]["what"] == {"reference": "Patient/p1"}
    details = {d["type"]: d["valueString"] for d in event["entity"][1]["detail"]}
    assert details["login-level"] == "dslogon-premium"
    assert codes(event) == {(CONFIDENTIALITY, "R")}


def test_failed_login_of_an_unknown_user_names_nobody() -> None:
    event = login_event(
        {
            "outcome": "failure",
            "account": False,
            "reason": "unknown-user",
            "username": "james.cartr",
            "method": "auto",
            "client_id": "app-1",
        }
    )
    assert event["outcome"] == "4" and event["outcomeDesc"] == "login failed"
    assert "entity" not in event
    assert event["agent"][0]["who"] == {"display": "unknown user"}
    assert "james.cartr" not in str(event)


def test_lockout_is_a_security_alert_on_the_account() -> None:
    event = login_event(
        {"outcome": "lockout", "account": True, "fhirUser": "Patient/p1", "username": "u"}
    )
    assert event["type"]["code"] == "110113" and event["outcome"] == "4"
    assert event["entity"][0]["what"] == {"reference": "Patient/p1"}


def test_audit_off_is_refused_in_production(monkeypatch) -> None:
    from fhir_server.config import Settings

    monkeypatch.setenv("AUDIT", "0")
    monkeypatch.delenv("FHIR_ENV", raising=False)
    assert Settings.from_env().audit is False
    monkeypatch.setenv("FHIR_ENV", "production")
    assert Settings.from_env().audit is True
    monkeypatch.delenv("AUDIT")
    monkeypatch.delenv("FHIR_ENV")
    assert Settings.from_env().audit is True
