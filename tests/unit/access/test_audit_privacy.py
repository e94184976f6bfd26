"""Which requests are recorded as one event per patient (profiles/access/audit.json)."""

from __future__ import annotations

import base64

import pytest

from fhir_server.access.audit import AuditRecord, audit_events
from fhir_server.access.audit_privacy import names_sensitive_code, parse_table

JAMES, SOPHIA, KIM = (
    "Patient/sponsor-james-carter",
    "Patient/adolescent-sophia-carter",
    "Practitioner/k",
)


def _named(event: dict) -> set[str]:
    return {e["what"]["reference"] for e in event.get("entity", []) if "what" in e}


def _queries(event: dict) -> list[str]:
    return [base64.b64decode(e["query"]).decode() for e in event.get("entity", []) if "query" in e]


@pytest.mark.parametrize(
    ("query", "sensitive"),
    [
        ("code=http://loinc.org|43304-5", True),
        ("code=43304-5", True),
        ("code:not=http://loinc.org|29463-7,http://loinc.org|43304-5", True),
        ("_security=http://terminology.hl7.org/CodeSystem/v3-ActCode|STD", True),
        ("code=http://loinc.org|29463-7&patient=x", False),
        ("code=http://example.org|43304-5", False),
    ],
)
def test_sensitive_codes(query: str, sensitive: bool) -> None:
    assert names_sensitive_code(query) is sensitive


def test_a_malformed_table_stops_the_server() -> None:
    with pytest.raises(ValueError):
        parse_table({"sensitive_query_codes": [{"system": "http://loinc.org", "codes": [1]}]})
    with pytest.raises(ValueError):
        parse_table({})


def test_one_event_per_patient_and_one_for_auditors() -> None:
    rec = AuditRecord(
        "GET", ["Observation"], query=f"patient={JAMES},{SOPHIA}", status=200, fhir_user=KIM
    )
    rec.patient = None
    rec.patients = [JAMES, SOPHIA]
    auditors, *copies = audit_events(rec)
    assert _named(auditors) == set() and _queries(auditors) == [rec.query]
    assert [_named(c) for c in copies] == [{JAMES}, {SOPHIA}]
    assert all(_queries(c) == [] for c in copies)
    single = AuditRecord("GET", ["Observation"], query=f"patient={JAMES}", status=200)
    single.patients = [JAMES]
    (event,) = audit_events(single)
    assert _named(event) == {JAMES} and _queries(event) == [single.query]


def test_a_patients_own_multi_patient_search_is_not_copied_to_them_twice() -> None:
    rec = AuditRecord("GET", ["Observation"], query="x", status=200, fhir_user=JAMES)
    rec.patients = [JAMES, SOPHIA]
    events = audit_events(rec)
    assert len(events) == 2 and [_named(e) for e in events[1:]] == [{SOPHIA}]
