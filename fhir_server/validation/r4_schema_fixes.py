"""Corrections applied to the loaded copy of ``fhir.schema.json`` (the vendored file stays
as published).

Each one makes the schema agree with the R4 specification it was generated from; the
official examples (``tests/integration/test_official_examples.py``) fail without them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from jsonschema import ValidationError

# The npm package ships the 4.0.0 build of the schema, whose FHIRVersion code list stops at
# 4.0.0; every R4 resource written today says 4.0.1 (https://hl7.org/fhir/R4/valueset-FHIR-version.html).
_FHIR_VERSION = "4.0.1"


def corrected_definitions(definitions: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``definitions`` with the corrections below; the input is not changed."""
    out = dict(definitions)
    # Nested resources go through the ``fhirResource`` keyword (see r4_schema) rather than
    # a oneOf over all 146 types.
    out["ResourceList"] = {"fhirResource": True}
    for name, body in definitions.items():
        props = body.get("properties")
        if not props:
            continue
        new_props = {p: _with_current_version(s) for p, s in props.items()}
        new_props.update(_canonical_extensions(props))
        if new_props != props:
            out[name] = {**body, "properties": new_props}
    return out


def _with_current_version(prop: dict[str, Any]) -> dict[str, Any]:
    for holder, key in ((prop, "enum"), (prop.get("items", {}), "enum")):
        codes = holder.get(key)
        if codes and "4.0.0" in codes and _FHIR_VERSION not in codes:
            fixed = {**holder, key: [*codes, _FHIR_VERSION]}
            return fixed if holder is prop else {**prop, "items": fixed}
    return prop


def _canonical_extensions(props: dict[str, Any]) -> dict[str, Any]:
    """``_name`` for every ``canonical`` element that lacks it.

    Any primitive may carry extensions in ``_name`` (https://hl7.org/fhir/R4/json.html#primitive);
    the schema generator left them out for ``canonical`` only, so ``_baseDefinition`` or
    ``_instantiatesCanonical`` would read as unknown elements.
    """
    element = {"$ref": "#/definitions/Element"}
    added: dict[str, Any] = {}
    for name, schema in props.items():
        if f"_{name}" in props:
            continue
        if schema.get("$ref") == "#/definitions/canonical":
            added[f"_{name}"] = element
        elif schema.get("items", {}).get("$ref") == "#/definitions/canonical":
            added[f"_{name}"] = {"items": element, "type": "array"}
    return added


def xsd_pattern(
    _validator: Any, pattern: str, instance: Any, _schema: Any
) -> Iterator[ValidationError]:
    """The ``pattern`` keyword with FHIR's regular-expression semantics.

    FHIR's patterns come from XML Schema, where ``\\s`` is only space, tab, CR and LF
    (https://www.w3.org/TR/xmlschema-2/#cces-sce); Python's Unicode ``\\s`` also matches a
    no-break space, which would make ordinary text such as ``"BS,\\u00a0DVM"`` an invalid
    ``string``. ASCII matching gives the XML Schema reading.
    """
    if isinstance(instance, str) and not _compiled(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


@lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.ASCII)
