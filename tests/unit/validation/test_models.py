"""The R4B-models layer: pydantic errors become findings with FHIR paths."""

from __future__ import annotations

import pytest

from fhir_server.validation import models
from fhir_server.validation.models import _choice_name


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ("'valueBoolean', 'valueString'", "value[x]"),
        ("'valueDate', 'valueDateTime'", "value[x]"),
        ("'multipleBirthBoolean', 'multipleBirthInteger'", "multipleBirth[x]"),
        ("'deceasedBoolean', 'deceasedDateTime'", "deceased[x]"),
    ],
)
def test_choice_element_name(fields: str, name: str) -> None:
    assert _choice_name(fields) == name


def test_models_know_r4_types_but_not_removed_ones() -> None:
    assert models.knows("Patient")
    assert not models.knows("MedicinalProduct")


def test_pattern_errors_are_left_to_the_schema() -> None:
    # A code with a no-break space is valid under R4's XML Schema regex semantics.
    resource = {"resourceType": "Patient", "gender": "male", "language": "en\u00a0"}
    assert models.check_structure(resource) == []


def test_nested_unknown_type_is_reported_as_models_failure() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": {"resourceType": "MedicinalProduct"}}],
    }
    with pytest.raises(models.ModelsFailed):
        models.check_structure(bundle)


def test_only_models_module_imports_fhir_resources() -> None:
    import re
    from pathlib import Path

    imports = re.compile(
        r"^\s*(from|import)\s+fhir\.resources|import_module\([\"']fhir\.resources", re.M
    )
    root = Path(__file__).resolve().parents[3]
    allowed = root / "fhir_server" / "validation" / "models.py"
    offenders = [
        str(path.relative_to(root))
        for folder in ("fhir_server", "smart_auth", "seed_data")
        for path in (root / folder).rglob("*.py")
        if path != allowed and imports.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []
