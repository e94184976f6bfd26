"""Refill and renewal eligibility of one MedicationRequest on a given day, from the table
(table.py), and the extension that carries it on every MedicationRequest a token reads.

Pure functions: the count of refills used comes from the stored document's workflow field
(`wf.refills`, written by the refill transaction: workflow.py), so a search pays no query
for it (docs/portal.md, "Prescriptions").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from fhir_server.portal.prescriptions.table import MedicationRules

Doc = dict[str, Any]
# The workflow field (storage/store.py WORKFLOW_FIELD) entry that counts refills requested.
REFILLS = "refills"
REFILLABLE, RENEWABLE, NONE = "refillable", "renewable", "none"


@dataclass(frozen=True)
class Eligibility:
    value: str  # refillable | renewable | none
    reason: str  # a reason code of the table
    refills_left: int

    def extension(self, rules: MedicationRules) -> Doc:
        return {
            "url": rules.extension_url,
            "extension": [
                {"url": "eligibility", "valueCode": self.value},
                {
                    "url": "reason",
                    "valueCoding": {
                        "system": rules.reason_system,
                        "code": self.reason,
                        "display": rules.reasons[self.reason],
                    },
                },
                {"url": "refillsRemaining", "valueUnsignedInt": self.refills_left},
            ],
        }


def refills_used(stored: Mapping[str, Any] | None) -> int:
    wf = (stored or {}).get("wf")
    n = wf.get(REFILLS) if isinstance(wf, Mapping) else None
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 0


def _end_day(mr: Doc) -> date | None:
    """The last day of `dispenseRequest.validityPeriod` (a date or a dateTime)."""
    end = ((mr.get("dispenseRequest") or {}).get("validityPeriod") or {}).get("end")
    if not isinstance(end, str) or len(end) < 4:
        return None
    try:
        if len(end) <= 10:
            parts = [int(p) for p in end.split("-")]
            while len(parts) < 3:
                parts.append(12 if len(parts) == 1 else 1)
            y, m, d = parts
            if len(end) < 10:  # a partial date runs to the end of its year or month
                nxt = date(y + (m == 12), m % 12 + 1, 1)
                return nxt - timedelta(days=1) if len(end) == 7 else date(y, 12, 31)
            return date(y, m, d)
        return datetime.fromisoformat(end).date()
    except ValueError:
        return None


def evaluate(rules: MedicationRules, mr: Doc, used: int, today: date) -> Eligibility:
    """The prescription's eligibility on `today` with `used` refills already requested."""
    allowed = (mr.get("dispenseRequest") or {}).get("numberOfRepeatsAllowed")
    allowed = allowed if isinstance(allowed, int) and not isinstance(allowed, bool) else 0
    left = max(allowed - used, 0)
    if mr.get("status") not in rules.statuses or mr.get("intent") not in rules.intents:
        return Eligibility(NONE, "not-an-active-order", 0)
    end = _end_day(mr)
    expired = end is not None and today > end
    if not expired and left > 0:
        return Eligibility(REFILLABLE, "refills-remain", left)
    if rules.excluded_class(mr) is not None:
        return Eligibility(NONE, "excluded-class", 0 if expired else left)
    if expired:
        assert end is not None
        if (today - end).days > rules.renewal_window_days:
            return Eligibility(NONE, "renewal-window-passed", 0)
        return Eligibility(RENEWABLE, "expired", 0)
    return Eligibility(RENEWABLE, "no-refills-left", 0)


def annotate(
    rules: MedicationRules, mr: Doc, stored: Mapping[str, Any] | None, today: date
) -> None:
    """Put the eligibility extension on `mr` (in place), replacing one already there: a
    stored copy never speaks for today."""
    result = evaluate(rules, mr, refills_used(stored), today)
    others = [
        e
        for e in mr.get("extension") or ()
        if not (isinstance(e, dict) and e.get("url") == rules.extension_url)
    ]
    mr["extension"] = [*others, result.extension(rules)]
