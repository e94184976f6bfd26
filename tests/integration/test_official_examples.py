"""Every official R4 example of a known type passes Validator.check.

The examples are HL7's npm package ``hl7.fhir.r4.examples@4.0.1`` (CC0), fetched into
``.cache/r4-examples/`` by ``scripts/fetch_r4_examples.py``. A failed fetch fails the
tests: they never skip.
"""

from __future__ import annotations

import importlib.util
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_server.validation import KNOWN_RESOURCE_TYPES, Validator

ROOT = Path(__file__).resolve().parents[2]

# Official examples that are invalid R4 (or differ in R4B), each with its reason. The test
# below fails if one of them starts passing, so this list cannot go stale.
KNOWN_EXCEPTIONS: dict[str, str] = {
    **{
        f"SearchParameter-{name}.json": "no SearchParameter.base, which R4 requires (1..*)"
        for name in (
            "codesystem-extensions-CodeSystem-author",
            "codesystem-extensions-CodeSystem-effective",
            "codesystem-extensions-CodeSystem-end",
            "codesystem-extensions-CodeSystem-keyword",
            "codesystem-extensions-CodeSystem-workflow",
            "valueset-extensions-ValueSet-author",
            "valueset-extensions-ValueSet-effective",
            "valueset-extensions-ValueSet-end",
            "valueset-extensions-ValueSet-keyword",
            "valueset-extensions-ValueSet-workflow",
        )
    },
    "SearchParameter-questionnaireresponse-extensions-QuestionnaireResponse-item-subject.json": (
        "its id has 67 characters; an R4 id has at most 64"
    ),
    "Questionnaire-qs1.json": "nested items without linkId, which R4 requires (1..1)",
    "ImplementationGuide-fhir.json": "no name and no status, which R4 requires (1..1)",
    "ig-r4.json": "no name and no status, which R4 requires (1..1)",
    "Evidence-example.json": (
        "R4B redefined Evidence (exposureBackground removed, variableDefinition required)"
    ),
}

# Known types of which the package has no example.
WITHOUT_EXAMPLES = {"Parameters"}


def _fetch() -> Path:
    spec = importlib.util.spec_from_file_location(
        "fetch_r4_examples", ROOT / "scripts" / "fetch_r4_examples.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    folder: Path = module.fetch()
    return folder


@pytest.fixture(scope="module")
def examples() -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """All examples, by resourceType, as (file name, resource)."""
    by_type: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for path in sorted(_fetch().glob("*.json")):
        if path.name == "package.json":
            continue
        resource = orjson.loads(path.read_bytes())
        by_type[resource["resourceType"]].append((path.name, resource))
    assert sum(len(v) for v in by_type.values()) > 5000, "the examples package looks truncated"
    return by_type


@pytest.fixture(scope="module")
def validator() -> Validator:
    return Validator()


@pytest.mark.parametrize("resource_type", sorted(KNOWN_RESOURCE_TYPES - WITHOUT_EXAMPLES))
def test_examples_of_type_are_valid(
    examples: dict[str, list[tuple[str, dict[str, Any]]]],
    validator: Validator,
    resource_type: str,
) -> None:
    assert examples[resource_type], f"no official example of {resource_type}"
    failures: list[str] = []
    for name, resource in examples[resource_type]:
        errors = [i for i in validator.check(resource) if i.severity in {"error", "fatal"}]
        if name in KNOWN_EXCEPTIONS:
            if not errors:
                failures.append(f"{name} now passes: remove it from KNOWN_EXCEPTIONS")
            continue
        failures += [
            f"{name}: {i.code} at {list(i.expression)}: {i.diagnostics}" for i in errors[:5]
        ]
    assert not failures, "\n".join(failures)


def test_types_without_examples_are_listed_honestly(
    examples: dict[str, list[tuple[str, dict[str, Any]]]],
) -> None:
    assert {t for t in KNOWN_RESOURCE_TYPES if not examples.get(t)} == WITHOUT_EXAMPLES


def test_known_exceptions_exist(examples: dict[str, list[tuple[str, dict[str, Any]]]]) -> None:
    names = {name for items in examples.values() for name, _ in items}
    assert set(KNOWN_EXCEPTIONS) <= names
