"""Identifiers for the exchange and identity features (docs/exchange.md, "Identifiers"):
an SSN on every seed Patient, the VA ICN on the veteran, and one more beneficiary, Ana
Lucía Peña Torres, whose DS Logon account is not yet linked to her record
(seed_data/logins.json, "unlinked"): she verifies her identity after signing in.

The SSNs are synthetic: area numbers 900-999 are never issued as SSNs (they are the IRS's
ITIN range), so none is a real person's. Each is derived from the person's EDIPI, so the
seed stays deterministic.
"""

from __future__ import annotations

from seed_data.common import EDIPI, MHS_PATIENT_PROFILE, V2_0203, Clock, Json, coding
from seed_data.directory import clinician_ref, org_ref

SSN = "http://hl7.org/fhir/sid/us-ssn"
VA_ICN = "urn:oid:2.16.840.1.113883.4.349"
UNLINKED_ID = "beneficiary-ana-pena"
UNLINKED_EDIPI = "1530000901"
VETERAN_ICN = "1012345678V123456"


def ssn_of(edipi: str) -> str:
    """A synthetic SSN (900-999 area: never issued) from an EDIPI's last six digits."""
    return f"9{edipi[-8:]}"


def ssn_identifier(value: str) -> Json:
    return {
        "use": "official",
        "type": {"coding": [coding(V2_0203, "SS", "Social Security number")]},
        "system": SSN,
        "value": value,
    }


def _edipi_of(patient: Json) -> str | None:
    for ident in patient.get("identifier", ()):
        if ident.get("system") == EDIPI:
            return str(ident["value"])
    return None


def added(resources: list[Json]) -> list[Json]:
    """The population with the identifiers added to its Patients (in place) and the
    unlinked beneficiary appended."""
    for r in resources:
        if r.get("resourceType") != "Patient":
            continue
        edipi = _edipi_of(r)
        if edipi is not None:
            r["identifier"].append(ssn_identifier(ssn_of(edipi)))
        if r["id"] == "veteran-samuel-ortiz":
            r["identifier"].append({"use": "official", "system": VA_ICN, "value": VETERAN_ICN})
    return resources


def build(clock: Clock) -> list[Json]:
    """The beneficiary with no linked login yet (a retired Air Force spouse)."""
    return [
        {
            "resourceType": "Patient",
            "id": UNLINKED_ID,
            "meta": {"profile": [MHS_PATIENT_PROFILE]},
            "identifier": [
                {
                    "use": "official",
                    "type": {"coding": [coding(V2_0203, "MI", "Military ID number")]},
                    "system": EDIPI,
                    "value": UNLINKED_EDIPI,
                }
            ],
            "active": True,
            "name": [{"use": "official", "family": "Peña Torres", "given": ["Ana", "Lucía"]}],
            "telecom": [{"system": "phone", "value": "757-555-0190", "use": "home"}],
            "gender": "female",
            "birthDate": clock.birth_date(51, 40),
            "address": [
                {
                    "use": "home",
                    "type": "both",
                    "line": ["7 Harbor View"],
                    "city": "Lakeside",
                    "state": "VA",
                    "postalCode": "23461",
                    "country": "US",
                }
            ],
            "generalPractitioner": [clinician_ref("rachel")],
            "managingOrganization": org_ref("mmc"),
        }
    ]
