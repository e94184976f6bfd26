"""Patients and the family relationships between them, as FHIR data.

- Every beneficiary is a Patient with an EDIPI and the ``mhs-patient`` profile.
- A parent is a RelatedPerson of each dependent (one per pair: ``RelatedPerson.patient`` is
  a single patient), carrying the parent's EDIPI; the parent's own Patient links to those
  RelatedPersons with ``Patient.link`` (type ``seealso``), so a login's ``fhirUser`` leads to
  the people the login may act for.
- An adult dependent's proxy grant is an active Consent whose actor is that RelatedPerson;
  a revoked grant is an inactive Consent (it must grant nothing).
"""

from __future__ import annotations

from seed_data.common import (
    EDIPI,
    LOINC,
    MHS_PATIENT_PROFILE,
    PARTICIPATION_TYPE,
    ROLE_CODE,
    V2_0203,
    Clock,
    Json,
    coding,
    concept,
    ref,
)
from seed_data.directory import (
    CARTER_DEPENDENTS,
    CARTER_FAMILY,
    HOUSEHOLDS,
    PEOPLE,
    Person,
    clinician_ref,
    org_ref,
    patient_ref,
    related_person_id,
    related_person_ref,
)

MARITAL_STATUS = "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus"
_MARITAL_DISPLAY = {"M": "Married", "S": "Never Married", "W": "Widowed", "D": "Divorced"}
CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
CONSENT_ACTION = "http://terminology.hl7.org/CodeSystem/consentaction"

# (who, of, v3-RoleCode relationship, display): "who" is the RelatedPerson to patient "of".
RELATIONSHIPS: tuple[tuple[str, str, str, str], ...] = (
    *(
        (parent, child, code, display)
        for child in CARTER_DEPENDENTS
        for parent, code, display in (("james", "FTH", "father"), ("maria", "MTH", "mother"))
    ),
    ("james", "maria", "HUSB", "husband"),
    ("maria", "james", "WIFE", "wife"),
)

SUSAN = {
    "given": ["Susan", "Marie"],
    "family": "Brooks-Reed",
    "phone": "757-555-0116",
    "email": "susan.reed@example.org",
}


def build(clock: Clock) -> list[Json]:
    return [
        *(patient(clock, p) for p in PEOPLE.values()),
        *(
            related_person(clock, who, of, code, display)
            for who, of, code, display in RELATIONSHIPS
        ),
        susan_for_eleanor(clock),
        *consents(clock),
        *groups(),
    ]


def edipi_identifier(value: str) -> Json:
    return {
        "use": "official",
        "type": {"coding": [coding(V2_0203, "MI", "Military ID number")], "text": "EDIPI"},
        "system": EDIPI,
        "value": value,
    }


def address(family_key: str) -> Json:
    street, _ = HOUSEHOLDS[family_key]
    return {
        "use": "home",
        "type": "both",
        "line": [street],
        "city": "Lakeside",
        "state": "VA",
        "postalCode": "23461",
        "country": "US",
    }


def telecom(p: Person) -> list[Json]:
    _, phone = HOUSEHOLDS[p.family_key]
    out = [{"system": "phone", "value": phone, "use": "home"}]
    if p.age >= 18:
        email = f"{p.given[0].lower()}.{p.family.lower()}@example.org"
        out.append({"system": "email", "value": email, "use": "home"})
    return out


def human_name(p: Person) -> Json:
    name: Json = {"use": "official", "family": p.family, "given": list(p.given)}
    if p.prefix:
        name["prefix"] = [p.prefix]
    return name


def patient(clock: Clock, p: Person) -> Json:
    res: Json = {
        "resourceType": "Patient",
        "id": p.id,
        "meta": {"profile": [MHS_PATIENT_PROFILE]},
        "identifier": [edipi_identifier(p.edipi)],
        "active": True,
        "name": [human_name(p)],
        "telecom": telecom(p),
        "gender": p.gender,
        "birthDate": clock.birth_date(p.age, p.days_since_birthday),
        "address": [address(p.family_key)],
    }
    if p.marital:
        res["maritalStatus"] = {
            "coding": [coding(MARITAL_STATUS, p.marital, _MARITAL_DISPLAY[p.marital])],
        }
    if p.age < 18:
        res["contact"] = [parent_contact(PEOPLE["maria"]), parent_contact(PEOPLE["james"])]
    if p.key == "eleanor":
        res["contact"] = [susan_contact()]
    res["communication"] = [
        {
            "language": {
                "coding": [coding("urn:ietf:bcp:47", "en-US", "English (United States)")],
            },
            "preferred": True,
        }
    ]
    res["generalPractitioner"] = [clinician_ref(p.pcm)]
    res["managingOrganization"] = org_ref("mmc")
    links = [
        {"other": related_person_ref(who, of), "type": "seealso"}
        for who, of, _, _ in RELATIONSHIPS
        if who == p.key
    ]
    if links:
        res["link"] = links
    return res


def parent_contact(parent: Person) -> Json:
    return {
        "relationship": [
            concept(
                ROLE_CODE,
                "FTH" if parent.gender == "male" else "MTH",
                "father" if parent.gender == "male" else "mother",
            ),
        ],
        "name": human_name(parent),
        "telecom": telecom(parent),
    }


def susan_contact() -> Json:
    return {
        "relationship": [concept(ROLE_CODE, "HPOWATT", "healthcare power of attorney")],
        "name": {"use": "official", "family": SUSAN["family"], "given": SUSAN["given"]},
        "telecom": [
            {"system": "phone", "value": SUSAN["phone"], "use": "mobile"},
            {"system": "email", "value": SUSAN["email"], "use": "home"},
        ],
    }


def related_person(clock: Clock, who: str, of: str, code: str, display: str) -> Json:
    rp = PEOPLE[who]
    dependent = PEOPLE[of]
    since = (
        clock.birth_date(dependent.age, dependent.days_since_birthday)
        if code in {"FTH", "MTH"}
        else clock.date(-365 * 22 - 40)
    )
    return {
        "resourceType": "RelatedPerson",
        "id": related_person_id(who, of),
        "identifier": [edipi_identifier(rp.edipi)],
        "active": True,
        "patient": patient_ref(of),
        "relationship": [concept(ROLE_CODE, code, display)],
        "name": [human_name(rp)],
        "telecom": telecom(rp),
        "gender": rp.gender,
        "birthDate": clock.birth_date(rp.age, rp.days_since_birthday),
        "address": [address(rp.family_key)],
        "period": {"start": since},
    }


def susan_for_eleanor(clock: Clock) -> Json:
    """Eleanor's daughter, appointed under a healthcare power of attorney; she operates
    Eleanor's Managed DS Logon account. She is not a beneficiary, so she has no Patient."""
    return {
        "resourceType": "RelatedPerson",
        "id": related_person_id("susan", "eleanor"),
        "active": True,
        "patient": patient_ref("eleanor"),
        "relationship": [
            concept(ROLE_CODE, "DAUC", "daughter"),
            concept(ROLE_CODE, "HPOWATT", "healthcare power of attorney"),
        ],
        "name": [{"use": "official", "family": SUSAN["family"], "given": SUSAN["given"]}],
        "telecom": [
            {"system": "phone", "value": SUSAN["phone"], "use": "mobile"},
            {"system": "email", "value": SUSAN["email"], "use": "home"},
        ],
        "gender": "female",
        "birthDate": clock.birth_date(55, 150),
        "address": [
            {
                "use": "home",
                "line": ["230 Willow Street"],
                "city": "Lakeside",
                "state": "VA",
                "postalCode": "23462",
                "country": "US",
            }
        ],
        "period": {"start": clock.date(-730)},
    }


def consent(
    clock: Clock,
    id_: str,
    patient_key: str,
    actor: Json,
    *,
    active: bool,
    start: int,
    end: int | None = None,
    actions: tuple[str, ...] = ("access",),
    note: str,
) -> Json:
    period: Json = {"start": clock.date(start)}
    if end is not None:
        period["end"] = clock.date(end)
    return {
        "resourceType": "Consent",
        "id": id_,
        "status": "active" if active else "inactive",
        "scope": concept(CONSENT_SCOPE, "patient-privacy", "Privacy Consent"),
        "category": [concept(LOINC, "59284-0", "Patient Consent", note)],
        "patient": patient_ref(patient_key),
        "dateTime": clock.at(start, "10:15"),
        "performer": [patient_ref(patient_key)],
        "organization": [org_ref("mmc")],
        "policyRule": concept(
            "http://terminology.hl7.org/CodeSystem/v3-ActCode", "OPTIN", "opt-in"
        ),
        "provision": {
            "type": "permit",
            "period": period,
            "actor": [
                {
                    "role": concept(PARTICIPATION_TYPE, "PRCP", "primary information recipient"),
                    "reference": actor,
                }
            ],
            "action": [
                concept(CONSENT_ACTION, a, {"access": "Access", "correct": "Access and Correct"}[a])
                for a in actions
            ],
        },
    }


def consents(clock: Clock) -> list[Json]:
    return [
        consent(
            clock,
            "consent-daniel-proxy-james",
            "daniel",
            related_person_ref("james", "daniel"),
            active=True,
            start=-40,
            note="Proxy access to the portal record granted to his father (the sponsor)",
        ),
        consent(
            clock,
            "consent-emma-proxy-maria-revoked",
            "emma",
            related_person_ref("maria", "emma"),
            active=False,
            start=-400,
            end=-120,
            note="Proxy access granted to her mother, revoked since: grants nothing",
        ),
        consent(
            clock,
            "consent-eleanor-managed-susan",
            "eleanor",
            related_person_ref("susan", "eleanor"),
            active=True,
            start=-730,
            actions=("access", "correct"),
            note="Healthcare power of attorney: daughter operates the Managed account",
        ),
    ]


def groups() -> list[Json]:
    return [
        {
            "resourceType": "Group",
            "id": "group-carter-family",
            "active": True,
            "type": "person",
            "actual": True,
            "name": "Carter family (sponsor MSgt James Carter)",
            "managingEntity": org_ref("mmc"),
            "quantity": len(CARTER_FAMILY),
            "member": [{"entity": patient_ref(k)} for k in CARTER_FAMILY],
        },
        {
            "resourceType": "Group",
            "id": "group-seed-population",
            "active": True,
            "type": "person",
            "actual": True,
            "name": "All patients of the synthetic seed population",
            "managingEntity": org_ref("mmc"),
            "quantity": len(PEOPLE),
            "member": [{"entity": ref("Patient", p.id, p.name)} for p in PEOPLE.values()],
        },
    ]
