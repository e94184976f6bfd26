"""Structural validation with the ``fhir.resources`` R4B models.

This is the only module in the project that imports ``fhir.resources`` (DESIGN.md: 8.x has
no plain R4 package; R4B is wire-compatible with R4 for the resources this server uses).
The models check what the JSON Schema cannot: required elements that may be carried by a
primitive's extension instead of its value (``status`` or ``_status``), and that a choice
element ``value[x]`` appears once
(https://hl7.org/fhir/R4/validation.html, "Structure" and "Cardinality";
https://hl7.org/fhir/R4/formats.html#choice).

The resource is only validated, never re-serialised: the server stores the JSON as sent.
"""

from __future__ import annotations

import re
from typing import Any

from fhir.resources.R4B import fhirtypes, get_fhir_model_class
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from fhir_server.validation.findings import Finding, Path, PathPart, label, short


class ModelsFailed(Exception):
    """The models raised something other than a validation error.

    fhir_core raises a bare ``KeyError`` for a nested resource of a type it does not know
    (an R4-only type in ``Bundle.entry.resource``); the schema layer reports that case
    properly, so the caller prefers its findings.
    """


def knows(resource_type: str) -> bool:
    """Whether the R4B models define ``resource_type`` (without importing its module)."""
    return hasattr(fhirtypes, resource_type + "Type")


def check_structure(resource: dict[str, Any]) -> list[Finding]:
    """Validate ``resource`` (whose ``resourceType`` the models know) against its model."""
    model = get_fhir_model_class(resource["resourceType"])
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        return [_finding(err) for err in exc.errors(include_url=False) if not _left_to_schema(err)]
    except Exception as exc:  # noqa: BLE001 - bad data must give an issue, never a 500
        raise ModelsFailed(f"{type(exc).__name__}: {exc}") from exc
    return []


# fhir_core's own error types, beside pydantic's standard ones.
_REQUIRED_TYPES = {"missing", "model_field_validation.missing"}
_CHOICE_MANY = re.compile(
    r"Any of one field value is expected from this list \[(.*)\], but got multiple"
)
_CHOICE_NONE = re.compile(r"Expect any of field value from this list \[(.*)\]")


def _left_to_schema(err: ErrorDetails) -> bool:
    """Errors the schema layer judges by R4's own rules, so the models' verdict is dropped.

    Primitive formats: the models match FHIR's patterns with Unicode ``\\s``, which refuses a
    code ending in a no-break space that R4's XML Schema semantics allow (see
    ``r4_schema_fixes.xsd_pattern``); the schema checks every primitive pattern anyway.
    """
    return err["type"] == "string_pattern_mismatch" or _primitive_extension(err)


def _primitive_extension(err: ErrorDetails) -> bool:
    """An ``_element`` the models refuse although R4 allows it.

    Every primitive may carry its extensions in ``_element``
    (https://hl7.org/fhir/R4/json.html#primitive), but the R4B ``Extension`` model has no
    ``_valueString`` and friends (the official v2 code systems use them for translations).
    The schema layer knows every ``_element`` R4 allows, so it alone judges them.
    """
    loc = err["loc"]
    return err["type"] == "extra_forbidden" and bool(loc) and str(loc[-1]).startswith("_")


def _finding(err: ErrorDetails) -> Finding:
    kind = err["type"]
    path = _path(err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    name = label(path)

    if kind == "extra_forbidden":
        return Finding("structure", f"Unknown element {name}", path)
    if kind in _REQUIRED_TYPES:
        return Finding("required", f"Missing required element {name}", path)
    if m := _CHOICE_MANY.search(msg):
        element = _choice_name(m.group(1))
        return Finding(
            "structure",
            f"Only one of {element} may be present (https://hl7.org/fhir/R4/formats.html#choice)",
            (*path, element),
        )
    if m := _CHOICE_NONE.search(msg):
        element = _choice_name(m.group(1))
        return Finding("required", f"Missing required element {element!r}", (*path, element))
    if kind.endswith("_type") or kind in {"json_invalid", "model_validation_format"}:
        return Finding("structure", f"Wrong type for {name}: {msg}", path)
    return Finding("value", f"Invalid value {short(err.get('input'))} for {name}: {msg}", path)


def _path(loc: tuple[int | str, ...]) -> Path:
    parts: list[PathPart] = []
    for part in loc:
        if part == "root":  # fhir_core's placeholder for "this element", not a JSON key
            continue
        parts.append("resourceType" if part == "resource_type" else part)
    return tuple(parts)


def _choice_name(quoted_fields: str) -> str:
    """``'valueBoolean', 'valueString'`` -> ``value[x]``.

    The name is the longest common prefix after which every field continues with a type
    name (capitalised): ``multipleBirthBoolean`` / ``multipleBirthInteger`` ->
    ``multipleBirth``, ``valueDate`` / ``valueDateTime`` -> ``value``.
    """
    fields = [f.strip().strip("'\"") for f in quoted_fields.split(",") if f.strip()]
    if not fields:
        return "[x]"
    shortest = min(len(f) for f in fields)
    for end in range(shortest - 1, 0, -1):
        prefix = fields[0][:end]
        if all(f.startswith(prefix) and f[end].isupper() for f in fields):
            return prefix + "[x]"
    return fields[0] + "[x]"
