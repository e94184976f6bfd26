"""fhir_server/access/labels.py: sensitive labels spelled as the policy table does."""

from __future__ import annotations

import pytest

from fhir_server.access.labels import canonical, load_table, normalised

CONF = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


@pytest.mark.parametrize(
    ("system", "code", "expected"),
    [
        (None, "R", (CONF, "R")),
        ("", "psy", (ACT, "PSY")),
        ("http://hl7.org/fhir/v3/Confidentiality", "R", (CONF, "R")),
        (f"{CONF}/", "r", (CONF, "R")),
        (CONF, "N", None),  # normal is no sensitive label
        ("http://example.org/other", "R", None),
    ],
)
def test_canonical(system, code, expected):
    assert canonical(system, code, load_table()) == expected


def test_normalised_rewrites_meta_security_and_copies_security_label():
    doc = {
        "resourceType": "DocumentReference",
        "meta": {"versionId": "1", "security": [{"code": "r"}, {"system": CONF, "code": "R"}]},
        "securityLabel": [{"coding": [{"system": f"{ACT}/", "code": "HIV"}]}],
    }
    out = normalised(doc)
    assert out["meta"] == {
        "versionId": "1",
        "security": [{"system": CONF, "code": "R"}, {"system": ACT, "code": "HIV"}],
    }
    assert doc["meta"]["security"][0] == {"code": "r"}  # the input is left alone
    plain = {"resourceType": "Observation", "meta": {"security": [{"system": CONF, "code": "R"}]}}
    assert normalised(plain) is plain
