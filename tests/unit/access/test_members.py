"""fhir_server/access/members.py: member lists redacted to what the caller may see."""

from __future__ import annotations

import pytest

from fhir_server.access.members import load_table, parse_table, redact


def group(*refs: str) -> dict:
    return {
        "resourceType": "Group",
        "quantity": len(refs),
        "member": [{"entity": {"reference": r, "display": r}} for r in refs]
        + [{"entity": {"display": "Someone by name only"}}],
    }


def test_hidden_members_and_unreferenced_entries_go_with_the_count():
    g = group("Patient/a", "Patient/b")
    redact(g, lambda ref: ref == "Patient/a")
    assert [m["entity"]["reference"] for m in g["member"]] == ["Patient/a"]
    assert "quantity" not in g
    empty = group("Patient/b")
    redact(empty, lambda ref: False)
    assert "member" not in empty


def test_other_types_and_fully_visible_lists_are_untouched():
    obs = {"resourceType": "Observation", "member": [{"entity": {"reference": "Patient/b"}}]}
    redact(obs, lambda ref: False)
    assert obs["member"]
    g = {"resourceType": "Group", "quantity": 1, "member": [{"entity": {"reference": "Patient/a"}}]}
    redact(g, lambda ref: True)
    assert g["quantity"] == 1 and len(g["member"]) == 1


def test_the_table_is_parsed_fail_fast():
    assert load_table()["Group"].reference == "entity"
    with pytest.raises(ValueError):
        parse_table({"member_lists": {"types": {"Group": {"list": "member"}}}})
