from __future__ import annotations

import pytest

from fhir_server import errors


@pytest.mark.parametrize(
    ("cls", "status", "code"),
    [
        (errors.BadRequest, 400, "invalid"),
        (errors.NotFound, 404, "not-found"),
        (errors.Gone, 410, "deleted"),
        (errors.PreconditionFailed, 412, "conflict"),
        (errors.PayloadTooLarge, 413, "too-costly"),
        (errors.UnsupportedMediaType, 415, "not-supported"),
        (errors.Unprocessable, 422, "processing"),
        (errors.ServiceUnavailable, 503, "transient"),
    ],
)
def test_each_error_carries_status_and_code(cls, status, code):
    err = cls("what happened")
    assert err.status == status
    assert err.outcome() == {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": "what happened"}],
    }


def test_code_and_issues_can_be_overridden():
    err = errors.NotFound("no such type", code="not-supported")
    assert err.status == 404
    assert err.issues[0].code == "not-supported"
    issue = errors.Issue("value", "bad", expression=("Patient.gender",))
    err = errors.BadRequest("bad", issues=[issue])
    assert err.outcome()["issue"][0]["expression"] == ["Patient.gender"]
