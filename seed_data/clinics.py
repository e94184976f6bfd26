"""The military medical center, its clinics, clinicians and care teams, and the VA partner."""

from __future__ import annotations

from seed_data.common import (
    EDIPI,
    LOINC,
    NPI,
    ROLE_CODE,
    SNOMED,
    V2_0203,
    V2_0360,
    Clock,
    Json,
    coding,
    concept,
    ref,
    text_concept,
)
from seed_data.directory import (
    CLINIC_NURSE_POOL,
    CLINICIANS,
    LOCATIONS,
    NURSE_POOLS,
    ORGS,
    PEOPLE,
    Clinician,
    care_team_id,
    clinician_ref,
    location_ref,
    org_ref,
    patient_ref,
    related_person_ref,
)

ORG_TYPE = "http://terminology.hl7.org/CodeSystem/organization-type"
PRACTITIONER_ROLE = "http://terminology.hl7.org/CodeSystem/practitioner-role"
PHYSICAL_TYPE = "http://terminology.hl7.org/CodeSystem/location-physical-type"

# Organization key -> (type code, type display, parent key, phone, DMIS id)
_ORG_DETAILS: dict[str, tuple[str, str, str | None, str, str | None]] = {
    "dha": ("govt", "Government", None, "703-555-0100", None),
    "mmc": ("prov", "Healthcare Provider", "dha", "757-555-0100", "0123"),
    "family-medicine": ("dept", "Hospital Department", "mmc", "757-555-0110", None),
    "internal-medicine": ("dept", "Hospital Department", "mmc", "757-555-0120", None),
    "behavioral-health": ("dept", "Hospital Department", "mmc", "757-555-0130", None),
    "laboratory": ("dept", "Hospital Department", "mmc", "757-555-0140", None),
    "radiology": ("dept", "Hospital Department", "mmc", "757-555-0150", None),
    "va": ("prov", "Healthcare Provider", None, "757-555-0190", None),
}

# Location id -> (v3 service delivery location type or None, physical type)
_LOCATION_TYPES: dict[str, tuple[tuple[str, str] | None, tuple[str, str]]] = {
    "loc-lakeside-mmc": (("HOSP", "Hospital"), ("bu", "Building")),
    "loc-family-medicine": (("FMC", "Family Medicine clinic"), ("wi", "Wing")),
    "loc-internal-medicine": (("GIM", "General internal medicine clinic"), ("wi", "Wing")),
    "loc-behavioral-health": (None, ("bu", "Building")),
    "loc-laboratory": (("HLAB", "hospital laboratory"), ("wi", "Wing")),
    "loc-radiology": (("RADDX", "Radiology diagnostics or therapeutics unit"), ("wi", "Wing")),
}

WEEKDAYS = ["mon", "tue", "wed", "thu", "fri"]


def build(clock: Clock) -> list[Json]:
    return [
        *(organization(key) for key in ORGS),
        *(location(loc_id) for loc_id in LOCATIONS),
        *(practitioner(c) for c in CLINICIANS.values()),
        *(practitioner_role(c) for c in CLINICIANS.values()),
        *(nurse_pool(team_id) for team_id in NURSE_POOLS),
        *(patient_care_team(clock, key) for key in PEOPLE),
    ]


def organization(key: str) -> Json:
    org_id, name = ORGS[key]
    type_code, type_display, parent, phone, dmis = _ORG_DETAILS[key]
    res: Json = {"resourceType": "Organization", "id": org_id}
    if dmis:
        res["identifier"] = [{"system": "http://mhs.example.org/fhir/sid/dmis-id", "value": dmis}]
    res |= {
        "active": True,
        "type": [concept(ORG_TYPE, type_code, type_display)],
        "name": name,
        "telecom": [{"system": "phone", "value": phone, "use": "work"}],
    }
    if key == "va":
        res["alias"] = ["VA Example HCS"]
        res["address"] = [
            {
                "use": "work",
                "line": ["500 Veterans Parkway"],
                "city": "Lakeside",
                "state": "VA",
                "postalCode": "23463",
                "country": "US",
            }
        ]
    elif key != "dha":
        res["address"] = [
            {
                "use": "work",
                "line": ["100 Medical Center Drive"],
                "city": "Lakeside",
                "state": "VA",
                "postalCode": "23460",
                "country": "US",
            }
        ]
    if parent:
        res["partOf"] = org_ref(parent)
    return res


def location(loc_id: str) -> Json:
    name, org_key = LOCATIONS[loc_id]
    service_type, physical = _LOCATION_TYPES[loc_id]
    res: Json = {
        "resourceType": "Location",
        "id": loc_id,
        "status": "active",
        "name": name,
        "mode": "instance",
    }
    if service_type:
        res["type"] = [concept(ROLE_CODE, *service_type)]
    res |= {
        "telecom": [{"system": "phone", "value": _ORG_DETAILS[org_key][3], "use": "work"}],
        "address": {
            "use": "work",
            "line": ["100 Medical Center Drive"],
            "city": "Lakeside",
            "state": "VA",
            "postalCode": "23460",
            "country": "US",
        },
        "physicalType": concept(PHYSICAL_TYPE, *physical),
        "managingOrganization": org_ref(org_key),
    }
    if loc_id != "loc-lakeside-mmc":
        res["partOf"] = location_ref("loc-lakeside-mmc")
    res["hoursOfOperation"] = [
        {"daysOfWeek": WEEKDAYS, "openingTime": "07:30:00", "closingTime": "16:30:00"}
    ]
    return res


def practitioner(c: Clinician) -> Json:
    identifiers: list[Json] = [{"use": "official", "system": NPI, "value": c.npi}]
    if c.edipi:
        identifiers.append(
            {
                "use": "secondary",
                "type": {"coding": [coding(V2_0203, "MI", "Military ID number")], "text": "EDIPI"},
                "system": EDIPI,
                "value": c.edipi,
            }
        )
    qualification = (
        concept(V2_0360, c.degree, c.degree_display)
        if c.degree in {"MD", "DO", "RN", "LPN"}
        else text_concept(c.degree_display)
    )
    domain = "va.example.org" if c.org == "va" else "mhs.example.org"
    name: Json = {"use": "official", "family": c.family, "given": [c.given], "suffix": [c.degree]}
    if c.role_code == "doctor":
        name["prefix"] = ["Dr."]
    return {
        "resourceType": "Practitioner",
        "id": c.id,
        "identifier": identifiers,
        "active": True,
        "name": [name],
        "telecom": [
            {"system": "phone", "value": org_phone(c.org), "use": "work"},
            {
                "system": "email",
                "value": f"{c.given.lower()}.{c.family.lower()}@{domain}",
                "use": "work",
            },
        ],
        "gender": c.gender,
        "qualification": [{"code": qualification}],
    }


def org_phone(org_key: str) -> str:
    return _ORG_DETAILS[org_key][3]


def practitioner_role(c: Clinician) -> Json:
    role_display = "Doctor" if c.role_code == "doctor" else "Nurse"
    res: Json = {
        "resourceType": "PractitionerRole",
        "id": f"role-{c.id}",
        "active": True,
        "practitioner": clinician_ref(c.key),
        "organization": org_ref(c.org),
        "code": [concept(PRACTITIONER_ROLE, c.role_code, role_display, c.title)],
    }
    if c.specialty:
        res["specialty"] = [concept(SNOMED, *c.specialty)]
    if c.location:
        res["location"] = [location_ref(c.location)]
    res["telecom"] = [{"system": "phone", "value": org_phone(c.org), "use": "work"}]
    res["availableTime"] = [
        {"daysOfWeek": WEEKDAYS, "availableStartTime": "08:00:00", "availableEndTime": "16:00:00"}
    ]
    return res


# The mark of a care team the organisation maintains (profiles/access/clinicians.json,
# `maintained_by_organisation`): only such teams confer access to their subject's record.
MAINTAINED = {
    "system": "https://mhs.example.org/fhir/CodeSystem/access-source",
    "code": "organisation-maintained",
}


def nurse_pool(team_id: str) -> Json:
    name, clinic, nurses = NURSE_POOLS[team_id]
    return {
        "resourceType": "CareTeam",
        "id": team_id,
        "meta": {"tag": [dict(MAINTAINED)]},
        "status": "active",
        "category": [text_concept("Clinic nurse pool")],
        "name": name,
        "participant": [
            {
                "role": [concept(SNOMED, "224535009", "Registered nurse", "Clinic nurse")],
                "member": clinician_ref(n),
                "onBehalfOf": org_ref(clinic),
            }
            for n in nurses
        ],
        "managingOrganization": [org_ref(clinic)],
        "telecom": [{"system": "phone", "value": org_phone(clinic), "use": "work"}],
    }


def patient_care_team(clock: Clock, key: str) -> Json:
    """The patient's PCM and the nurse pool of the PCM's clinic (a CareTeam in a CareTeam)."""
    p = PEOPLE[key]
    pool = CLINIC_NURSE_POOL[p.clinic]
    participants: list[Json] = [
        {
            "role": [
                concept(SNOMED, "446050000", "Primary care physician", "Primary Care Manager (PCM)")
            ],
            "member": clinician_ref(p.pcm),
            "onBehalfOf": org_ref(p.clinic),
        },
        {
            "role": [text_concept("Clinic nurse pool")],
            "member": ref("CareTeam", pool, NURSE_POOLS[pool][0]),
        },
    ]
    if key == "eleanor":
        participants.append(
            {
                "role": [concept(SNOMED, "133932002", "Caregiver")],
                "member": related_person_ref("susan", "eleanor"),
            }
        )
    return {
        "resourceType": "CareTeam",
        "id": care_team_id(key),
        "meta": {"tag": [dict(MAINTAINED)]},
        "status": "active",
        "category": [
            concept(LOINC, "LA28865-6", "Longitudinal care-coordination focused care team")
        ],
        "name": f"Primary care team of {p.name}",
        "subject": patient_ref(key),
        "period": {"start": clock.date(-400)},
        "participant": participants,
        "managingOrganization": [org_ref(p.clinic)],
        "telecom": [{"system": "phone", "value": org_phone(p.clinic), "use": "work"}],
    }
