"""Consent provisions the access policy cannot apply are refused when written.

The family policy reads a proxy grant's scope, actors, period, actions, classes and nested
exceptions (fhir_server/access/consent.py, table `profiles/access/family.json`). A provision
element outside that list (`securityLabel`, `purpose`, `code`, `data`...) would be ignored,
and the grant would then show more than its author meant: it is a business-rule error (422)
naming the element instead (https://hl7.org/fhir/R4/consent.html#provision).
"""

from __future__ import annotations

from typing import Any

from fhir_server.access.consent import unsupported
from fhir_server.validation.findings import Finding, to_expression


def findings(resource: dict[str, Any]) -> list[Finding]:
    return [
        Finding(
            "business-rule",
            f"{to_expression('Consent', path)} is not supported in a Consent's provisions "
            "(the access policy applies type, period, actor, action, class and nested "
            "provisions only)",
            path,
        )
        for path in unsupported(resource)
    ]
