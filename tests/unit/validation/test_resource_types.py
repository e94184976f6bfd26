"""KNOWN_RESOURCE_TYPES: R4 types (official schema) that the R4B models define."""

from __future__ import annotations

from fhir_server.validation import KNOWN_RESOURCE_TYPES, models
from fhir_server.validation.r4_schema import r4_resource_types


def test_first_class_and_supporting_types_are_known() -> None:
    needed = {
        "Patient", "Observation", "DiagnosticReport", "MedicationRequest", "Appointment",
        "Communication", "Practitioner", "PractitionerRole", "Organization", "Location",
        "CareTeam", "RelatedPerson", "Consent", "Schedule", "Slot", "Questionnaire",
        "QuestionnaireResponse", "DocumentReference", "Binary", "Immunization",
        "AllergyIntolerance", "Condition", "Encounter", "MedicationDispense", "Task",
        "Provenance", "AuditEvent", "Group", "Bundle", "OperationOutcome", "Parameters",
        "CapabilityStatement", "StructureDefinition", "SearchParameter",
    }  # fmt: skip
    assert needed <= KNOWN_RESOURCE_TYPES


def test_known_is_r4_intersected_with_the_models() -> None:
    r4 = r4_resource_types()
    assert len(r4) == 146
    assert {t for t in r4 if models.knows(t)} == KNOWN_RESOURCE_TYPES
    # The 18 R4 types that R4B dropped (MedicinalProduct*, Substance* beside Substance,
    # EffectEvidenceSynthesis, RiskEvidenceSynthesis) are the difference.
    assert len(KNOWN_RESOURCE_TYPES) == 128
    assert "MedicinalProduct" not in KNOWN_RESOURCE_TYPES
    assert "EffectEvidenceSynthesis" not in KNOWN_RESOURCE_TYPES


def test_r4b_only_types_are_not_known() -> None:
    for r4b_only in ("SubscriptionTopic", "SubscriptionStatus", "Citation", "Ingredient"):
        assert models.knows(r4b_only)
        assert r4b_only not in KNOWN_RESOURCE_TYPES
