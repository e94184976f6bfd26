"""Which search parameter dates a resource's care, for `$everything`'s `start` and `end`.

https://hl7.org/fhir/R4/patient-operation-everything.html: "The date range relates to care
dates, not record currency dates". Each type's care date is one of its own R4 `date`
search parameters, picked by the rule below, so the range is applied by the ordinary search
machinery (`ge<start>` and `le<end>` on that parameter). docs/exchange.md lists the result.
"""

from __future__ import annotations

from fhir_server.search.parse import Criterion, parse_search
from fhir_server.search.registry import Registry

# Where a type's generic `date` parameter is not the care date (R4 descriptions): a
# DocumentReference's `date` is when the reference was made (`period` is the service), a
# MedicationRequest's `date` is a dosage timing event (`authoredon` is when it was ordered),
# a Condition's `recorded-date` is bookkeeping (`onset-date` is the care).
OVERRIDES = {
    "Condition": "onset-date",
    "DocumentReference": "period",
    "MedicationRequest": "authoredon",
}
# Otherwise the first of these the type has. Birth and death dates, expiry dates and the
# like are not care dates: a type with none of these is undated and never filtered out.
PREFERENCE = (
    "date",
    "effective",
    "effective-time",
    "occurrence",
    "authored",
    "authored-on",
    "authoredon",
    "sent",
    "started",
    "period",
    "created",
    "recorded",
    "whenhandedover",
    "collected",
    "identified",
    "datewritten",
    "datetime",
    "start-date",
    "onset-date",
)


def care_date_param(registry: Registry, resource_type: str) -> str | None:
    """The code of `resource_type`'s care-date parameter, or None when it has none."""
    params = registry.params_for(resource_type)
    for code in (OVERRIDES.get(resource_type), *PREFERENCE):
        if code is not None and code in params and params[code].type == "date":
            return code
    return None


def care_date_criteria(
    registry: Registry, resource_type: str, start: str | None, end: str | None
) -> tuple[Criterion, ...]:
    """Search criteria keeping resources whose care date overlaps [start, end]."""
    code = care_date_param(registry, resource_type)
    if code is None or (start is None and end is None):
        return ()
    params = []
    if start is not None:
        params.append((code, f"ge{start}"))
    if end is not None:
        params.append((code, f"le{end}"))
    return parse_search(resource_type, params, registry, strict=True).criteria
