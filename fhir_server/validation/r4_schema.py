"""Code sets and primitive formats, checked with the official R4 JSON Schema.

``fhir.schema.json`` (draft-06, https://hl7.org/fhir/R4/json.html#schema) is vendored in
``fhir_server/data/`` (see its README for origin and licence) so the server starts without
network access. It catches what the R4B models let through: codes outside a required
binding (``Patient.gender``), primitive formats (``date``, ``id``), strict JSON types
(``"active": "true"``, ``null``) and the FHIR R4 shapes where R4B differs.

Validating against the schema's top-level ``oneOf`` of all 146 types costs 23-211 ms per
resource (DESIGN.md); a resource is checked against its own type's definition only, with one
validator per type, built on first use and cached. Nested resources (``contained``,
``Bundle.entry.resource``, ``Parameters.parameter.resource``) would hit the same ``oneOf``
through ``ResourceList``; the loaded copy of the schema replaces that definition with the
``fhirResource`` keyword, which dispatches on the nested ``resourceType`` instead. The other
corrections to the loaded copy are in ``r4_schema_fixes``.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator, Mapping
from functools import cache
from importlib import resources
from typing import Any

import orjson
from jsonschema import Draft6Validator, ValidationError
from jsonschema.protocols import Validator as SchemaValidator
from jsonschema.validators import extend

from fhir_server.validation.findings import Finding, label, short
from fhir_server.validation.r4_schema_fixes import corrected_definitions, xsd_pattern

_SCHEMA_FILE = "fhir.schema.json.gz"
_REF_PREFIX = "#/definitions/"


@cache
def load_schema() -> dict[str, Any]:
    """The vendored official R4 schema, parsed once per process."""
    data = resources.files("fhir_server.data").joinpath(_SCHEMA_FILE).read_bytes()
    schema: dict[str, Any] = orjson.loads(gzip.decompress(data))
    return schema


def r4_resource_types() -> frozenset[str]:
    """Every R4 resource type, from the schema's ``resourceType`` discriminator."""
    return frozenset(load_schema()["discriminator"]["mapping"])


class SchemaChecker:
    """Validates a resource against its type's definition in ``fhir.schema.json``."""

    def __init__(self, allowed_types: frozenset[str]) -> None:
        self._allowed = allowed_types
        self._definitions = corrected_definitions(load_schema()["definitions"])
        # Lets a failing subschema be named ("date", "code") in diagnostics.
        self._type_names = {id(body): name for name, body in self._definitions.items()}
        self._cls = extend(
            Draft6Validator,
            {"$ref": self._ref, "fhirResource": self._nested_resource, "pattern": xsd_pattern},
        )
        self._validators: dict[str, SchemaValidator] = {}

    def check(self, resource: Mapping[str, Any]) -> list[Finding]:
        """Findings for ``resource``, whose ``resourceType`` must be in ``allowed_types``."""
        validator = self._validator(resource["resourceType"])
        return [f for err in validator.iter_errors(resource) for f in self._findings(err)]

    def _validator(self, resource_type: str) -> SchemaValidator:
        validator = self._validators.get(resource_type)
        if validator is None:
            validator = self._cls(self._definitions[resource_type])
            self._validators[resource_type] = validator
        return validator

    def _nested_resource(
        self, validator: Any, _value: Any, instance: Any, _schema: Any
    ) -> Iterator[ValidationError]:
        if not isinstance(instance, dict):
            yield ValidationError(f"{short(instance)} is not a resource (a JSON object)")
            return
        resource_type = instance.get("resourceType")
        if resource_type is None:
            yield ValidationError(
                "Missing required element 'resourceType'", validator="resourceType"
            )
            return
        if resource_type not in self._allowed:
            yield ValidationError(
                f"Unknown or unsupported resourceType {short(resource_type)}",
                validator="resourceType",
            )
            return
        yield from validator.descend(instance, self._definitions[resource_type])

    def _ref(
        self, validator: Any, ref: str, instance: Any, _schema: Any
    ) -> Iterator[ValidationError]:
        # Every $ref in fhir.schema.json is "#/definitions/<name>": a dict lookup replaces
        # the general resolver, which took 40% of the time on large resources.
        yield from validator.descend(instance, self._definitions[ref.removeprefix(_REF_PREFIX)])

    def _findings(self, err: ValidationError) -> Iterator[Finding]:
        path = tuple(err.absolute_path)
        keyword = err.validator
        instance = err.instance
        if keyword == "additionalProperties":
            known = err.schema.get("properties", {})
            for name in instance:
                if name not in known:
                    yield Finding("structure", f"Unknown element {name!r}", (*path, name))
            return
        if keyword == "required":
            for name in err.validator_value:  # type: ignore[union-attr]
                if name not in instance:
                    yield Finding("required", f"Missing required element {name!r}", (*path, name))
            return
        where = label(path)
        if keyword == "enum":
            allowed = ", ".join(str(v) for v in err.validator_value)  # type: ignore[union-attr]
            yield Finding(
                "value",
                f"Invalid code {short(instance)} for {where}: expected one of {allowed}",
                path,
            )
            return
        type_name = self._type_names.get(id(err.schema))
        if keyword == "pattern":
            yield Finding(
                "value", f"Invalid {type_name or 'value'} {short(instance)} for {where}", path
            )
        elif keyword == "type":
            expected = type_name or f"JSON {err.validator_value}"
            yield Finding(
                "structure",
                f"Wrong type for {where}: expected {expected}, got {short(instance)}",
                path,
            )
        elif keyword == "resourceType" and "resourceType" not in instance:
            yield Finding("required", err.message, (*path, "resourceType"))
        elif keyword == "resourceType":
            yield Finding("not-supported", err.message, path)
        else:
            yield Finding("structure", f"{where}: {err.message}", path)
