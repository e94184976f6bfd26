"""Resource validation on create and update: structure, then the project's profiles.

Follows https://hl7.org/fhir/R4/validation.html: a resource is checked for structure and
cardinality (the R4B models), for value domains and primitive formats (the official R4 JSON
Schema), and for conformance to the profiles it claims in ``meta.profile`` (our JSON Schema
profiles). A failure of the first two is a malformed resource (400); a failure of a profile
is a well-formed resource the server will not process (422), as the http page puts it
(https://hl7.org/fhir/R4/http.html#create).

The two structural layers overlap (both see an unknown element or a wrong JSON type), so one
issue is kept per element: the models' finding wins and the schema adds only elements the
models did not already flag.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fhir_server.errors import BadRequest, Issue, Unprocessable
from fhir_server.validation import consent_rules, models
from fhir_server.validation.findings import Finding
from fhir_server.validation.profiles import ProfileSet
from fhir_server.validation.r4_schema import SchemaChecker
from fhir_server.validation.resource_types import KNOWN_RESOURCE_TYPES

# Rules on a type's content that no schema expresses, applied like a profile (422).
BUSINESS_RULES: dict[str, Callable[[dict[str, Any]], list[Finding]]] = {
    "Consent": consent_rules.findings,
}

# The project's profiles folder in a source checkout (fhir_server/validation -> repo root).
DEFAULT_PROFILES_DIR = Path(__file__).resolve().parents[2] / "profiles"


class Validator:
    """Loads the schema and the profiles once (at app start-up); then checks resources."""

    def __init__(self, profiles_dir: Path | None = None) -> None:
        """``profiles_dir`` defaults to the project's ``profiles/``; it must exist if given."""
        if profiles_dir is None and DEFAULT_PROFILES_DIR.is_dir():
            profiles_dir = DEFAULT_PROFILES_DIR
        self._schema = SchemaChecker(KNOWN_RESOURCE_TYPES)
        self._profiles = ProfileSet(profiles_dir)

    def profile_urls(self) -> list[str]:
        """Canonical URLs of the profiles this server checks, for the CapabilityStatement."""
        return self._profiles.urls()

    def check(self, resource: dict[str, Any]) -> list[Issue]:
        """Structural and schema issues; an empty list means valid. Never raises on bad data."""
        if not isinstance(resource, dict):
            return [Issue(code="structure", diagnostics="A resource must be a JSON object")]
        resource_type = resource.get("resourceType")
        if not isinstance(resource_type, str):
            return [Issue(code="required", diagnostics="The resource has no resourceType")]
        if resource_type not in KNOWN_RESOURCE_TYPES:
            return [
                Issue(
                    code="not-supported",
                    diagnostics=f"Unknown or unsupported resourceType {resource_type!r}",
                )
            ]
        findings = self._schema.check(resource)
        try:
            findings = _merge(models.check_structure(resource), findings)
        except models.ModelsFailed as exc:
            if not findings:
                findings = [Finding("structure", f"The resource could not be read: {exc}")]
        return [f.to_issue(resource_type) for f in findings]

    def check_profiles(self, resource: dict[str, Any]) -> list[Issue]:
        """Issues from the project's profiles that the resource names in ``meta.profile``, and
        from the business rules of its type (``BUSINESS_RULES``)."""
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            return []
        rt = resource["resourceType"]
        found = self._profiles.check(resource)
        rule = BUSINESS_RULES.get(rt)
        if rule is not None:
            found += rule(resource)
        return [f.to_issue(rt) for f in found]

    def validate(self, resource: dict[str, Any]) -> None:
        """Raise ``BadRequest`` (400) on structural issues, then ``Unprocessable`` (422) on
        profile issues."""
        issues = self.check(resource)
        if _errors(issues):
            raise BadRequest(
                diagnostics=_summary("is not a valid FHIR R4 resource", issues), issues=issues
            )
        issues = self.check_profiles(resource)
        if _errors(issues):
            raise Unprocessable(
                diagnostics=_summary("does not conform to its profile", issues), issues=issues
            )


def _merge(first: list[Finding], second: list[Finding]) -> list[Finding]:
    """``first`` plus the findings of ``second`` on elements ``first`` did not flag.

    Two findings are on the same element when one path is the other or lies inside it.
    Sets of paths keep this linear: a large Bundle can carry thousands of findings.
    """
    # A root-level finding overlaps everything; it must not hide the precise ones.
    flagged = {f.path for f in first if f.path}
    enclosing = {f.path[:n] for f in first for n in range(1, len(f.path) + 1)}

    def already_flagged(finding: Finding) -> bool:
        path = finding.path
        return path in enclosing or any(path[:n] in flagged for n in range(1, len(path)))

    return first + [s for s in second if not already_flagged(s)]


def _errors(issues: list[Issue]) -> bool:
    return any(i.severity in {"error", "fatal"} for i in issues)


def _summary(what: str, issues: list[Issue]) -> str:
    n = len(issues)
    return f"The resource {what}: {n} issue{'s' if n != 1 else ''}"
