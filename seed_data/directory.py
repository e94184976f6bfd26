"""Who is who: the fixed ids, names and ages that every other seed module refers to.

Ids are readable and stable (letters, digits and hyphens). Ages are targets: the birth
dates are computed from the seeding day so that each person has exactly this age then.
"""

from __future__ import annotations

from dataclasses import dataclass

from seed_data.common import Json, ref


@dataclass(frozen=True)
class Person:
    key: str  # short first-name key used in other resources' ids
    id: str  # Patient id
    given: tuple[str, ...]
    family: str
    gender: str
    age: int
    days_since_birthday: int
    edipi: str
    pcm: str  # practitioner key
    clinic: str  # organization key
    family_key: str  # household (address and phone)
    description: str
    marital: str | None = None  # v3-MaritalStatus code, adults only
    prefix: str | None = None

    @property
    def name(self) -> str:
        return f"{' '.join(self.given)} {self.family}"

    @property
    def ref(self) -> Json:
        return ref("Patient", self.id, self.name)


@dataclass(frozen=True)
class Clinician:
    key: str
    id: str
    given: str
    family: str
    gender: str
    degree: str  # v2-0360 code (MD, DO, RN, LPN) or free text
    degree_display: str
    npi_base: str  # first nine digits; the tenth is the Luhn check digit
    edipi: str | None
    org: str  # organization key
    location: str | None
    role_code: str  # practitioner-role code: doctor | nurse
    specialty: tuple[str, str] | None  # SNOMED code, display
    title: str

    @property
    def name(self) -> str:
        prefix = "Dr. " if self.role_code == "doctor" else ""
        return f"{prefix}{self.given} {self.family}, {self.degree}"

    @property
    def ref(self) -> Json:
        return ref("Practitioner", self.id, self.name)

    @property
    def npi(self) -> str:
        return self.npi_base + npi_check_digit(self.npi_base)


def npi_check_digit(first_nine: str) -> str:
    """Luhn check digit over the prefix 80840 + the first nine digits (CMS NPI standard)."""
    digits = [int(d) for d in "80840" + first_nine]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


# fmt: off
PEOPLE: dict[str, Person] = {
    p.key: p
    for p in (
        Person("james", "sponsor-james-carter", ("James", "Robert"), "Carter", "male", 42, 131,
               "1530000101", "rachel", "family-medicine", "carter",
               "Active-duty sponsor, Master Sergeant, U.S. Air Force", "M", "MSgt"),
        Person("maria", "spouse-maria-carter", ("Maria", "Elena"), "Carter", "female", 40, 57,
               "1530000102", "rachel", "family-medicine", "carter", "Spouse of the sponsor", "M"),
        Person("emma", "dependent-emma-carter", ("Emma", "Grace"), "Carter", "female", 20, 214,
               "1530000103", "rachel", "family-medicine", "carter",
               "Adult dependent (20), no proxy grant", "S"),
        Person("daniel", "dependent-daniel-carter", ("Daniel", "James"), "Carter", "male", 19, 88,
               "1530000104", "rachel", "family-medicine", "carter",
               "Adult dependent (19), granted proxy access to his father", "S"),
        Person("sophia", "adolescent-sophia-carter", ("Sophia", "Rose"), "Carter", "female", 15,
               102, "1530000105", "rachel", "family-medicine", "carter",
               "Adolescent dependent (15) with sensitive records"),
        Person("liam", "child-liam-carter", ("Liam", "Thomas"), "Carter", "male", 8, 163,
               "1530000106", "rachel", "family-medicine", "carter", "Child dependent (8)"),
        Person("robert", "retiree-robert-alvarez", ("Robert", "Luis"), "Alvarez", "male", 67, 45,
               "1530000201", "michael", "internal-medicine", "alvarez",
               "Military retiree, Commander (ret.), U.S. Navy; DS Logon Basic", "M", "CDR"),
        Person("eleanor", "managed-eleanor-brooks", ("Eleanor", "Mae"), "Brooks", "female", 84, 240,
               "1530000301", "michael", "internal-medicine", "brooks",
               "Survivor beneficiary whose Managed account her daughter operates", "W"),
        Person("marcus", "cac-marcus-bell", ("Marcus", "Anthony"), "Bell", "male", 31, 79,
               "1530000401", "laura", "family-medicine", "bell",
               "Active-duty Staff Sergeant, U.S. Army; signs in with a CAC", "S", "SSG"),
        Person("karen", "piv-karen-liu", ("Karen",), "Liu", "female", 47, 199, "1530000501",
               "laura", "family-medicine", "liu",
               "DoD civilian and Army Reserve officer; signs in with a PIV card", "D"),
        Person("samuel", "veteran-samuel-ortiz", ("Samuel", "David"), "Ortiz", "male", 58, 276,
               "1530000601", "michael", "internal-medicine", "ortiz",
               "Veteran, medically retired U.S. Marine; records shared by the VA", "M"),
    )
}
# fmt: on

CARTER_DEPENDENTS = ("emma", "daniel", "sophia", "liam")
CARTER_FAMILY = ("james", "maria", *CARTER_DEPENDENTS)

HOUSEHOLDS: dict[str, tuple[str, str]] = {
    # family key: (street line, phone); all in the fictional town of Lakeside, VA.
    "carter": ("412 Liberty Loop", "757-555-0142"),
    "alvarez": ("88 Anchor Way", "757-555-0177"),
    "brooks": ("19 Magnolia Court", "757-555-0115"),
    "bell": ("Bldg 1204, Room 311, Fort Lakeside", "757-555-0163"),
    "liu": ("2301 Harbor View Drive, Apt 4B", "757-555-0188"),
    "ortiz": ("7 Cypress Lane", "757-555-0129"),
}

# fmt: off
CLINICIANS: dict[str, Clinician] = {
    c.key: c
    for c in (
        Clinician("rachel", "pcm-rachel-kim", "Rachel", "Kim", "female", "MD", "Doctor of Medicine",
                  "174000001", "1530000901", "family-medicine", "loc-family-medicine", "doctor",
                  ("419772000", "Family practice"), "Primary Care Manager, Family Medicine"),
        Clinician("laura", "pcm-laura-chen", "Laura", "Chen", "female", "DO",
                  "Doctor of Osteopathy", "174000002", "1530000902", "family-medicine",
                  "loc-family-medicine", "doctor", ("419772000", "Family practice"),
                  "Primary Care Manager, Family Medicine"),
        Clinician("michael", "pcm-michael-osei", "Michael", "Osei", "male", "MD",
                  "Doctor of Medicine", "174000003", "1530000903", "internal-medicine",
                  "loc-internal-medicine", "doctor", ("419192003", "Internal medicine"),
                  "Primary Care Manager, Internal Medicine"),
        Clinician("ethan", "bh-ethan-walsh", "Ethan", "Walsh", "male", "PsyD",
                  "Doctor of Psychology", "174000004", "1530000904", "behavioral-health",
                  "loc-behavioral-health", "doctor", None, "Clinical psychologist"),
        Clinician("jessica", "rn-jessica-moore", "Jessica", "Moore", "female", "RN",
                  "Registered Nurse", "174000005", "1530000905", "family-medicine",
                  "loc-family-medicine", "nurse", None, "Clinic nurse, Family Medicine"),
        Clinician("carlos", "rn-carlos-diaz", "Carlos", "Diaz", "male", "RN", "Registered Nurse",
                  "174000006", "1530000906", "family-medicine", "loc-family-medicine", "nurse",
                  None, "Clinic nurse, Family Medicine"),
        Clinician("tamika", "lpn-tamika-green", "Tamika", "Green", "female", "LPN",
                  "Licensed Practical Nurse", "174000007", "1530000907", "internal-medicine",
                  "loc-internal-medicine", "nurse", None, "Clinic nurse, Internal Medicine"),
        Clinician("omar", "rad-omar-haddad", "Omar", "Haddad", "male", "MD", "Doctor of Medicine",
                  "174000008", "1530000908", "radiology", "loc-radiology", "doctor",
                  ("394914008", "Radiology"), "Radiologist"),
        Clinician("helen", "path-helen-novak", "Helen", "Novak", "female", "MD",
                  "Doctor of Medicine", "174000009", "1530000909", "laboratory", "loc-laboratory",
                  "doctor", ("394915009", "General pathology"), "Pathologist"),
        Clinician("angela", "va-angela-lopez", "Angela", "Lopez", "female", "MD",
                  "Doctor of Medicine", "174000010", None, "va", None, "doctor",
                  ("419192003", "Internal medicine"), "VA primary care physician"),
    )
}
# fmt: on

# Organization key -> (id, name)
ORGS: dict[str, tuple[str, str]] = {
    "dha": ("dha", "Defense Health Agency"),
    "mmc": ("lakeside-mmc", "Lakeside Military Medical Center"),
    "family-medicine": ("lakeside-family-medicine", "Lakeside MMC Family Medicine Clinic"),
    "internal-medicine": ("lakeside-internal-medicine", "Lakeside MMC Internal Medicine Clinic"),
    "behavioral-health": ("lakeside-behavioral-health", "Lakeside MMC Behavioral Health Clinic"),
    "laboratory": ("lakeside-laboratory", "Lakeside MMC Laboratory"),
    "radiology": ("lakeside-radiology", "Lakeside MMC Radiology"),
    "va": ("va-example-hcs", "VA Example Health Care System"),
}

# Location id -> (name, managing organization key)
LOCATIONS: dict[str, tuple[str, str]] = {
    "loc-lakeside-mmc": ("Lakeside Military Medical Center, main building", "mmc"),
    "loc-family-medicine": ("Family Medicine Clinic, Building 2, 1st floor", "family-medicine"),
    "loc-internal-medicine": (
        "Internal Medicine Clinic, Building 2, 2nd floor",
        "internal-medicine",
    ),
    "loc-behavioral-health": ("Behavioral Health Clinic, Building 5", "behavioral-health"),
    "loc-laboratory": ("Laboratory, main building, ground floor", "laboratory"),
    "loc-radiology": ("Radiology, main building, 1st floor", "radiology"),
}

# Nurse pools: CareTeam id -> (name, clinic key, nurse keys)
NURSE_POOLS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "careteam-fm-nurse-pool": (
        "Family Medicine nurse pool",
        "family-medicine",
        ("jessica", "carlos"),
    ),
    "careteam-im-nurse-pool": ("Internal Medicine nurse pool", "internal-medicine", ("tamika",)),
}
CLINIC_NURSE_POOL = {
    "family-medicine": "careteam-fm-nurse-pool",
    "internal-medicine": "careteam-im-nurse-pool",
}


def person(key: str) -> Person:
    return PEOPLE[key]


def patient_ref(key: str) -> Json:
    return PEOPLE[key].ref


def clinician_ref(key: str) -> Json:
    return CLINICIANS[key].ref


def org_ref(key: str) -> Json:
    org_id, name = ORGS[key]
    return ref("Organization", org_id, name)


def location_ref(location_id: str) -> Json:
    return ref("Location", location_id, LOCATIONS[location_id][0])


def care_team_id(key: str) -> str:
    """The patient's own primary care team."""
    return f"careteam-{PEOPLE[key].id.split('-', 1)[1]}"


def care_team_ref(key: str) -> Json:
    return ref("CareTeam", care_team_id(key), f"Primary care team of {PEOPLE[key].name}")


def related_person_id(who: str, of: str) -> str:
    """RelatedPerson that represents ``who`` in relation to patient ``of``."""
    return f"rp-{who}-for-{of}"


def related_person_ref(who: str, of: str) -> Json:
    name = "Susan Brooks-Reed" if who == "susan" else PEOPLE[who].name
    return ref("RelatedPerson", related_person_id(who, of), name)
