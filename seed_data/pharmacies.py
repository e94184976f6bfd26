"""One pharmacy per clinic (the Location a refill is picked up from), and the prescription
of an excluded class (profiles/portal/medications.json `excluded`: a schedule II controlled
substance, expired, which the portal may neither refill nor renew).

With seed_data/medications.py the seed covers every eligibility: refillable (lisinopril),
no refills left (naproxen), expired (atorvastatin) and excluded (oxycodone).
"""

from __future__ import annotations

from seed_data.common import Clock, Json, concept
from seed_data.directory import org_ref
from seed_data.medications import Rx, medication_request

ROLE_CODE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
DEA_SCHEDULE = "https://mhs.example.org/fhir/StructureDefinition/dea-schedule"
# Pharmacy Location id -> (name, the clinic's Organization key)
PHARMACIES: dict[str, tuple[str, str]] = {
    "pharmacy-fm": ("Lakeside Family Medicine Pharmacy", "family-medicine"),
    "pharmacy-im": ("Lakeside Internal Medicine Pharmacy", "internal-medicine"),
    "pharmacy-bh": ("Lakeside Behavioral Health Pharmacy", "behavioral-health"),
}

EXCLUDED = Rx(
    "medrx-james-oxycodone", "james", "1049621", "oxycodone hydrochloride 5 MG Oral Tablet",
    "Take 1 tablet by mouth every 6 hours as needed for severe pain", 4, 12, "tablet", 0,
    (-30, -20), "cond-james-low-back-pain",
)  # fmt: skip


def pharmacy(loc_id: str) -> Json:
    name, org_key = PHARMACIES[loc_id]
    return {
        "resourceType": "Location",
        "id": loc_id,
        "status": "active",
        "name": name,
        "mode": "instance",
        "type": [concept(ROLE_CODE, "PHARM", "Pharmacy")],
        "telecom": [{"system": "phone", "value": "757-555-0160", "use": "work"}],
        "managingOrganization": org_ref(org_key),
    }


def build(clock: Clock) -> list[Json]:
    oxycodone = medication_request(clock, EXCLUDED)
    oxycodone["extension"] = [{"url": DEA_SCHEDULE, "valueCode": "CII"}]
    return [*(pharmacy(p) for p in PHARMACIES), oxycodone]
