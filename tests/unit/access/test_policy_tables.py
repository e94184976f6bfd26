"""The access tables compiled once give what parsing them per request gave."""

from __future__ import annotations

from fhir_server.access.family import load_table
from fhir_server.access.policy_tables import compile_tables, label_keys, message_keys
from fhir_server.search.registry import Registry


def test_compiled_tables_match_a_fresh_parse() -> None:
    reg = Registry.load_default()
    tables = compile_tables(reg)
    assert tables.label_keys == label_keys(reg, load_table())
    for patient in ("Patient/t", "Patient/sponsor-james-carter", "Patient/a.b-1"):
        assert tables.message_keys(patient) == message_keys(reg, load_table(), patient)
        assert set(tables.message_keys(patient)) >= {
            f"sender={patient}",
            f"recipient={patient}",
        }
    assert tables.directory.types == tables.clinicians.directory_types
    assert "Schedule" in tables.directory.compartment_types  # placed by `actor`
