"""smart_auth/pages.py, rfc6750.py and the bearer header parser."""

from __future__ import annotations

from smart_auth import bearer_token, www_authenticate
from smart_auth.flow import ConsentView, LoginView
from smart_auth.pages import consent_page, describe, login_page
from tests.integration.auth.forms import only_form


def test_login_page_has_one_form_with_labelled_inputs():
    form = only_form(login_page(LoginView("tx1", "App <script>")))
    assert len(form.by_type("text")) == 1 and len(form.by_type("password")) == 1
    assert set(form.labels) >= {"username", "password", "method"}
    assert "<script>" not in login_page(LoginView("tx1", "App <script>"))


def test_consent_page():
    view = ConsentView(
        tx="t",
        client_name="App",
        user_name="Jo",
        level_label="DS Logon Premium",
        resource_scopes=[
            "patient/AllergyIntolerance.rs",
            "patient/Observation.rs?category=x|laboratory",
        ],
        identity=["openid", "fhirUser"],
        refresh="offline_access",
        patients=["Patient/a", "Patient/b"],
        patient_names={"Patient/a": "A", "Patient/b": "B"},
        patient_free_text=False,
        withheld=["patient/Communication.rs"],
    )
    html = consent_page(view)
    form = only_form(html)
    assert [f.value for f in form.by_type("checkbox")] == [
        "patient/AllergyIntolerance.rs",
        "patient/Observation.rs?category=x|laboratory",
        "offline_access",
    ]
    assert [f.value for f in form.by_type("radio")] == ["Patient/a", "Patient/b"]
    assert any(f.name == "approve" for f in form.fields)
    assert "Offline access" in html and "does not allow" in html


def test_describe():
    assert (
        describe("patient/AllergyIntolerance.rs")
        == "See and search allergies in the chosen patient's health record"
    )
    assert describe("user/*.cruds").startswith("See, search, add, change and delete")
    # Plain words for the wildcard (issue 16 item 4), never "patient's all of the ...".
    assert (
        describe("patient/*.rs")
        == "See and search everything in the chosen patient's health record"
    )
    assert "all of the" not in describe("user/*.rs")
    assert describe("patient/ServiceRequest.r") == (
        "See service requests in the chosen patient's health record"
    )
    assert "(only category laboratory)" in describe(
        "patient/Observation.rs?category=http://x|laboratory"
    )


def test_www_authenticate():
    assert www_authenticate("http://h/fhir", None) == 'Bearer realm="http://h/fhir"'
    assert (
        www_authenticate("r", "invalid_token", 'bad "x"')
        == 'Bearer realm="r", error="invalid_token", error_description="bad \\"x\\""'
    )


def test_bearer_token():
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token("Bearer ") is None
    assert bearer_token(None) is None


def test_clinician_picks_a_care_team_patient_by_name_with_search():
    view = ConsentView(
        tx="t",
        client_name="App",
        user_name="Dr Kim",
        level_label="CAC",
        resource_scopes=["patient/*.rs"],
        identity=[],
        refresh=None,
        patients=["Patient/a", "Patient/b", "Patient/c"],
        patient_names={"Patient/a": "Ann Lee", "Patient/b": "Bo <b>", "Patient/c": "Cy Lee"},
        patient_free_text=False,
        withheld=[],
        searchable=True,
        find="lee",
        shown_patients=["Patient/a", "Patient/c"],
    )
    html = consent_page(view)
    form = only_form(html)
    assert [f.value for f in form.by_type("radio")] == ["Patient/a", "Patient/c"]
    assert "Ann Lee" in html and "Patient/b" not in html and "<b>" not in html
    assert any(f.name == "find" for f in form.fields) and "care teams" in html
    assert any(f.name == "approve" for f in form.fields)
