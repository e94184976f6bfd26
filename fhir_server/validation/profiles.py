"""The project's own profiles, written as JSON Schema and selected by ``meta.profile``.

A resource claims conformance to a profile by listing its canonical URL in ``meta.profile``
(https://hl7.org/fhir/R4/resource-definitions.html#Meta.profile). Each ``*.schema.json``
file in ``profiles/`` is one profile whose ``$id`` is that canonical URL; a resource naming
it is checked against it with ``jsonschema`` (the draft is taken from the file's
``$schema``, 2020-12 when absent). The matching StructureDefinition that a
CapabilityStatement lists sits beside it as ``StructureDefinition-<name>.json``.

Decisions:

- A URL in ``meta.profile`` that is not one of ours is ignored, not refused. ``meta.profile``
  is a claim, and "it is up to the server and/or other infrastructure of policy to determine
  whether/how these claims are verified" (https://hl7.org/fhir/R4/resource-definitions.html#Meta.profile;
  https://hl7.org/fhir/R4/validation.html): refusing every unknown URL would reject data from
  partners whose implementation guides we do not hold.
- A versioned canonical (``url|1.0``) selects the same profile as the bare URL: the project
  keeps one version of each profile.
- A malformed profile file fails at start-up (``ProfileError``), never at request time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, ValidationError
from jsonschema.exceptions import SchemaError
from jsonschema.protocols import Validator as SchemaValidator
from jsonschema.validators import validator_for
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from fhir_server.validation.findings import Finding, short

PROFILE_GLOB = "*.schema.json"


class ProfileError(Exception):
    """A profile file in ``profiles/`` is not a usable JSON Schema."""


class ProfileSet:
    """Every JSON Schema profile found in one folder, keyed by canonical URL."""

    def __init__(self, folder: Path | None) -> None:
        schemas = _read(folder) if folder is not None else {}
        registry: Registry[Any] = Registry().with_resources(
            (url, Resource.from_contents(schema, default_specification=DRAFT202012))
            for url, schema in schemas.items()
        )
        self._titles = {url: str(s.get("title") or url) for url, s in schemas.items()}
        self._validators: dict[str, SchemaValidator] = {}
        for url, schema in schemas.items():
            cls = validator_for(schema, default=Draft202012Validator)
            self._validators[url] = cls(schema, registry=registry)

    def urls(self) -> list[str]:
        return sorted(self._validators)

    def check(self, resource: dict[str, Any]) -> list[Finding]:
        """Findings from every known profile that ``resource`` names in ``meta.profile``."""
        meta = resource.get("meta")
        claimed = meta.get("profile") if isinstance(meta, dict) else None
        if not isinstance(claimed, list):
            return []
        findings: list[Finding] = []
        for entry in claimed:
            url = entry.split("|", 1)[0] if isinstance(entry, str) else None
            validator = self._validators.get(url) if url else None
            if validator is None or url is None:
                continue
            for err in validator.iter_errors(resource):
                findings.extend(_findings(self._titles[url], err))
        return findings


def _read(folder: Path) -> dict[str, dict[str, Any]]:
    if not folder.is_dir():
        raise ProfileError(f"profiles folder {folder} does not exist")
    schemas: dict[str, dict[str, Any]] = {}
    for file in sorted(folder.glob(PROFILE_GLOB)):
        try:
            schema = json.loads(file.read_text(encoding="utf-8"))
            validator_for(schema, default=Draft202012Validator).check_schema(schema)
        except (ValueError, SchemaError) as exc:
            raise ProfileError(f"{file}: not a valid JSON Schema: {exc}") from exc
        url = schema.get("$id")
        if not isinstance(url, str) or not url:
            raise ProfileError(f"{file}: a profile needs its canonical URL as $id")
        if url in schemas:
            raise ProfileError(f"{file}: profile {url} is defined twice")
        schemas[url] = schema
    return schemas


_CODES = {
    "required": "required",
    "contains": "required",
    "minContains": "required",
    "minItems": "required",
    "maxContains": "structure",
    "maxItems": "structure",
    "type": "structure",
    "additionalProperties": "structure",
    "pattern": "value",
    "const": "value",
    "enum": "value",
    "format": "value",
}


def _findings(title: str, err: ValidationError) -> Iterator[Finding]:
    path = tuple(err.absolute_path)
    code = _CODES.get(str(err.validator), "processing")
    if err.validator == "required":
        rules = err.schema.get("properties", {}) if isinstance(err.schema, dict) else {}
        for name in err.validator_value:  # type: ignore[union-attr]
            if isinstance(err.instance, dict) and name not in err.instance:
                why = rules.get(name, {}).get("description")
                text = f"missing required element {name!r}" + (f": {why}" if why else "")
                yield Finding(code, f"{title}: {text}", (*path, name))
        return
    # A profile explains its rules in each subschema's description; the generic message
    # would quote the whole offending element.
    description = err.schema.get("description") if isinstance(err.schema, dict) else None
    if description:
        message = str(description)
    elif err.validator in {"pattern", "const", "enum", "format"}:
        message = f"invalid value {short(err.instance)}"
    else:
        message = err.message if len(err.message) <= 200 else err.message[:197] + "..."
    yield Finding(code, f"{title}: {message}", path)
