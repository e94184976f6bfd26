"""Problems (SNOMED CT), allergies (SNOMED CT) and immunizations (CVX)."""

from __future__ import annotations

from dataclasses import dataclass

from seed_data.common import CVX, SNOMED, Clock, Json, concept, labels, ucum
from seed_data.directory import CLINICIANS, PEOPLE, clinician_ref, location_ref, patient_ref
from seed_data.scheduling import encounter_ref

CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
ALLERGY_CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
ALLERGY_VERIFICATION = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"
ROUTE = "http://terminology.hl7.org/CodeSystem/v3-RouteOfAdministration"
V2_0443 = "http://terminology.hl7.org/CodeSystem/v2-0443"


@dataclass(frozen=True)
class Problem:
    id: str
    patient: str
    code: str
    display: str
    onset: int  # days from today
    resolved_after: int | None = None  # days after onset; None: still active
    visit: str | None = None  # past visit id without "appt-": an encounter diagnosis
    security: tuple[str, ...] = ()
    recorder: str | None = None  # defaults to the patient's PCM


# fmt: off
PROBLEMS: tuple[Problem, ...] = (
    Problem("cond-james-hyperlipidemia", "james", "55822004", "Hyperlipidemia", -900),
    Problem("cond-james-hypertension", "james", "38341003", "Hypertension", -600),
    Problem("cond-james-low-back-pain", "james", "279039007", "Low back pain", -300, 60),
    Problem("cond-maria-migraine", "maria", "37796009", "Migraine", -1500),
    Problem("cond-maria-anemia", "maria", "271737000", "Anemia", -90, None, "maria-migraine"),
    Problem("cond-emma-strep-throat", "emma", "43878008", "Streptococcal sore throat", -200, 10,
            "emma-sore-throat"),
    Problem("cond-emma-allergic-rhinitis", "emma", "367498001", "Seasonal allergic rhinitis",
            -1800),
    Problem("cond-daniel-mcl-injury", "daniel", "444448004",
            "Injury of medial collateral ligament of knee", -30, None, "daniel-knee-injury"),
    Problem("cond-daniel-alcohol-use", "daniel", "15167005", "Alcohol abuse", -30, None,
            "daniel-knee-injury", ("ETH", "R")),
    Problem("cond-sophia-asthma", "sophia", "195967001", "Asthma", -2500),
    Problem("cond-sophia-chlamydia", "sophia", "105629000", "Chlamydial infection", -58, 28,
            "sophia-reproductive-health", ("SEX", "STD", "R")),
    Problem("cond-sophia-anxiety", "sophia", "197480006", "Anxiety disorder", -50, None,
            "sophia-bh-intake", ("PSY", "R"), "ethan"),
    Problem("cond-liam-atopic-dermatitis", "liam", "24079001", "Atopic dermatitis", -2000),
    Problem("cond-liam-otitis-media", "liam", "65363002", "Otitis media", -400, 14),
    Problem("cond-robert-diabetes", "robert", "44054006", "Diabetes mellitus type 2", -2400),
    Problem("cond-robert-hypertension", "robert", "38341003", "Hypertension", -3000),
    Problem("cond-robert-knee-osteoarthritis", "robert", "239873007", "Osteoarthritis of knee",
            -1100),
    Problem("cond-robert-colon-polyp", "robert", "68496003", "Polyp of colon", -160, 1),
    Problem("cond-eleanor-alzheimers", "eleanor", "26929004", "Alzheimer's disease", -1400),
    Problem("cond-eleanor-atrial-fibrillation", "eleanor", "49436004", "Atrial fibrillation",
            -2000),
    Problem("cond-eleanor-osteoporosis", "eleanor", "64859006", "Osteoporosis", -1000),
    Problem("cond-marcus-ankle-sprain", "marcus", "44465007", "Sprain of ankle", -25, None,
            "marcus-ankle"),
    Problem("cond-karen-hypothyroidism", "karen", "83664006", "Idiopathic atrophic hypothyroidism",
            -1200),
    Problem("cond-samuel-hip-osteoarthritis", "samuel", "239872002", "Osteoarthritis of hip", -180,
            None, "samuel-establish-care"),
)
# fmt: on

# id, patient, SNOMED code, display, category, criticality, reaction (code, display, severity)
_Reaction = tuple[str, str, str]
# fmt: off
ALLERGIES: tuple[tuple[str, str, str, str, str | None, str | None, _Reaction | None], ...] = (
    ("allergy-james-penicillin", "james", "91936005", "Allergy to penicillin", "medication", "high",
     ("247472004", "Hives", "moderate")),
    ("allergy-maria-none-known", "maria", "716186003", "No known allergy", None, None, None),
    ("allergy-emma-grass-pollen", "emma", "418689008", "Allergy to grass pollen", "environment",
     "low", ("76067001", "Sneezing", "mild")),
    ("allergy-daniel-shellfish", "daniel", "300913006", "Shellfish allergy", "food", "high",
     ("271807003", "Eruption of skin", "moderate")),
    ("allergy-sophia-dust-mite", "sophia", "232350006", "House dust mite allergy", "environment",
     "low", ("76067001", "Sneezing", "mild")),
    ("allergy-liam-peanut", "liam", "91935009", "Allergy to peanuts", "food", "high",
     ("39579001", "Anaphylaxis", "severe")),
    ("allergy-robert-bee-venom", "robert", "424213003", "Allergy to bee venom", "environment",
     "high", ("247472004", "Hives", "moderate")),
    ("allergy-eleanor-latex", "eleanor", "300916003", "Latex allergy", "environment", "low",
     ("271807003", "Eruption of skin", "mild")),
    ("allergy-marcus-none-known", "marcus", "716186003", "No known allergy", None, None, None),
    ("allergy-karen-shellfish", "karen", "300913006", "Shellfish allergy", "food", "high",
     ("247472004", "Hives", "moderate")),
)
# fmt: on

# id, patient, CVX code, display, days from today, route (IM | SQ | None)
# fmt: off
VACCINES: tuple[tuple[str, str, str, str, int, str | None], ...] = (
    ("imm-james-flu", "james", "150", "Influenza, injectable, quadrivalent, preservative free", -60,
     "IM"),
    ("imm-james-tdap", "james", "115", "Tdap", -1500, "IM"),
    ("imm-james-anthrax", "james", "24", "anthrax", -2500, "IM"),
    ("imm-james-smallpox", "james", "75", "vaccinia (smallpox)", -2600, None),
    ("imm-maria-flu", "maria", "150", "Influenza, injectable, quadrivalent, preservative free", -58,
     "IM"),
    ("imm-emma-flu", "emma", "150", "Influenza, injectable, quadrivalent, preservative free", -70,
     "IM"),
    ("imm-emma-menb", "emma", "163", "meningococcal B, OMV", -1000, "IM"),
    ("imm-daniel-flu", "daniel", "150", "Influenza, injectable, quadrivalent, preservative free",
     -70, "IM"),
    ("imm-daniel-menacwy", "daniel", "114", "meningococcal MCV4P", -1300, "IM"),
    ("imm-sophia-hpv", "sophia", "165", "HPV9", -400, "IM"),
    ("imm-sophia-tdap", "sophia", "115", "Tdap", -1000, "IM"),
    ("imm-sophia-menacwy", "sophia", "114", "meningococcal MCV4P", -1000, "IM"),
    ("imm-sophia-flu", "sophia", "150", "Influenza, injectable, quadrivalent, preservative free",
     -120, "IM"),
    ("imm-liam-dtap", "liam", "20", "DTaP", -1200, "IM"),
    ("imm-liam-ipv", "liam", "10", "IPV", -1200, "IM"),
    ("imm-liam-mmr", "liam", "03", "MMR", -1200, "SQ"),
    ("imm-liam-varicella", "liam", "21", "varicella", -1200, "SQ"),
    ("imm-liam-flu", "liam", "150", "Influenza, injectable, quadrivalent, preservative free", -150,
     "IM"),
    ("imm-robert-flu", "robert", "135", "Influenza, high dose seasonal", -80, "IM"),
    ("imm-robert-zoster", "robert", "187", "zoster recombinant", -700, "IM"),
    ("imm-robert-pneumococcal", "robert", "33", "pneumococcal polysaccharide PPV23", -900, "IM"),
    ("imm-eleanor-flu", "eleanor", "135", "Influenza, high dose seasonal", -100, "IM"),
    ("imm-eleanor-pneumococcal", "eleanor", "133", "Pneumococcal conjugate PCV 13", -1600, "IM"),
    ("imm-marcus-anthrax", "marcus", "24", "anthrax", -400, "IM"),
    ("imm-marcus-hepb", "marcus", "43", "Hep B, adult", -1800, "IM"),
    ("imm-marcus-flu", "marcus", "150", "Influenza, injectable, quadrivalent, preservative free",
     -30, "IM"),
    ("imm-karen-flu", "karen", "150", "Influenza, injectable, quadrivalent, preservative free", -90,
     "IM"),
    ("imm-samuel-flu", "samuel", "150", "Influenza, injectable, quadrivalent, preservative free",
     -180, "IM"),
)
# fmt: on
_ROUTES = {"IM": "Injection, intramuscular", "SQ": "Injection, subcutaneous"}
_CLINIC_NURSE = {"family-medicine": "jessica", "internal-medicine": "tamika"}


def build(clock: Clock) -> list[Json]:
    return [
        *(condition(clock, p) for p in PROBLEMS),
        *(allergy(clock, *row) for row in ALLERGIES),
        *(immunization(clock, *row) for row in VACCINES),
    ]


def condition(clock: Clock, p: Problem) -> Json:
    res: Json = {"resourceType": "Condition", "id": p.id}
    if p.security:
        res["meta"] = {"security": labels(*p.security)}
    resolved = p.resolved_after is not None
    category = (
        ("encounter-diagnosis", "Encounter Diagnosis")
        if p.visit
        else ("problem-list-item", "Problem List Item")
    )
    res |= {
        "clinicalStatus": concept(
            CONDITION_CLINICAL, *(("resolved", "Resolved") if resolved else ("active", "Active"))
        ),
        "verificationStatus": concept(CONDITION_VERIFICATION, "confirmed", "Confirmed"),
        "category": [concept(CONDITION_CATEGORY, *category)],
        "code": concept(SNOMED, p.code, p.display),
        "subject": patient_ref(p.patient),
    }
    if p.visit:
        res["encounter"] = encounter_ref(p.visit)
    res["onsetDateTime"] = clock.date(p.onset)
    if p.resolved_after is not None:
        res["abatementDateTime"] = clock.date(p.onset + p.resolved_after)
    res["recordedDate"] = clock.date(max(p.onset, -400))
    res["recorder"] = clinician_ref(p.recorder or PEOPLE[p.patient].pcm)
    return res


def allergy(
    clock: Clock,
    id_: str,
    patient: str,
    code: str,
    display: str,
    category: str | None,
    criticality: str | None,
    reaction: _Reaction | None,
) -> Json:
    res: Json = {
        "resourceType": "AllergyIntolerance",
        "id": id_,
        "clinicalStatus": concept(ALLERGY_CLINICAL, "active", "Active"),
        "verificationStatus": concept(ALLERGY_VERIFICATION, "confirmed", "Confirmed"),
    }
    if category:
        res["type"] = "allergy"
        res["category"] = [category]
    if criticality:
        res["criticality"] = criticality
    res |= {
        "code": concept(SNOMED, code, display),
        "patient": patient_ref(patient),
        "recordedDate": clock.date(-400),
        "recorder": clinician_ref(PEOPLE[patient].pcm),
    }
    if reaction:
        r_code, r_display, severity = reaction
        res["reaction"] = [
            {"manifestation": [concept(SNOMED, r_code, r_display)], "severity": severity}
        ]
    return res


def immunization(
    clock: Clock, id_: str, patient: str, cvx: str, display: str, offset: int, route: str | None
) -> Json:
    clinic = PEOPLE[patient].clinic
    nurse = _CLINIC_NURSE[clinic]
    res: Json = {
        "resourceType": "Immunization",
        "id": id_,
        "status": "completed",
        "vaccineCode": concept(CVX, cvx, display),
        "patient": patient_ref(patient),
        "occurrenceDateTime": clock.at(offset, "10:20"),
        "primarySource": True,
        "location": location_ref(CLINICIANS[nurse].location or "loc-lakeside-mmc"),
        "lotNumber": f"LMC{int(cvx):03d}-{abs(offset) % 997:03d}",
    }
    if route:
        res["route"] = concept(ROUTE, route, _ROUTES[route])
        res["doseQuantity"] = ucum(0.5, "mL")
    res["performer"] = [
        {
            "function": concept(V2_0443, "AP", "Administering Provider"),
            "actor": clinician_ref(nurse),
        }
    ]
    return res
