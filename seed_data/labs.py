"""Lab and vital-sign Observations (LOINC, UCUM units, reference ranges) and the laboratory
DiagnosticReports that group them. Radiology and pathology are in ``seed_data.reports``."""

from __future__ import annotations

from dataclasses import dataclass

from seed_data.common import (
    INTERPRETATION,
    LOINC,
    OBSERVATION_CATEGORY,
    SNOMED,
    V2_0074,
    Clock,
    Json,
    concept,
    labels,
    ref,
    ucum,
)
from seed_data.directory import clinician_ref, org_ref, patient_ref
from seed_data.scheduling import encounter_ref

POSITIVE = ("10828004", "Positive")
NEGATIVE = ("260385009", "Negative")


@dataclass(frozen=True)
class Lab:
    """One numeric result: LOINC code and display, value, UCUM unit, reference range."""

    key: str  # id suffix
    loinc: str
    display: str
    value: float
    unit: str
    low: float | None
    high: float | None


@dataclass(frozen=True)
class Draw:
    """When and why a specimen was taken."""

    patient: str
    offset: int
    visit: str | None = None  # past visit id without "appt-"
    security: tuple[str, ...] = ()


# fmt: off
LIPIDS = (
    Lab("cholesterol", "2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", 212, "mg/dL", None,
        200),
    Lab("triglycerides", "2571-8", "Triglyceride [Mass/volume] in Serum or Plasma", 168, "mg/dL",
        None, 150),
    Lab("hdl", "2085-9", "Cholesterol in HDL [Mass/volume] in Serum or Plasma", 44, "mg/dL", 40,
        None),
    Lab("ldl", "18262-6", "Cholesterol in LDL [Mass/volume] in Serum or Plasma by Direct assay",
        138, "mg/dL", None, 100),
)
# fmt: on
# fmt: off
CBC = (
    Lab("wbc", "6690-2", "Leukocytes [#/volume] in Blood by Automated count", 6.1, "10*3/uL", 4.5,
        11.0),
    Lab("hemoglobin", "718-7", "Hemoglobin [Mass/volume] in Blood", 10.9, "g/dL", 12.0, 15.5),
    Lab("hematocrit", "4544-3", "Hematocrit [Volume Fraction] of Blood by Automated count", 33.5,
        "%", 36.0, 46.0),
    Lab("platelets", "777-3", "Platelets [#/volume] in Blood by Automated count", 265, "10*3/uL",
        150, 400),
)
# fmt: on
# fmt: off
BMP = (
    Lab("glucose", "2345-7", "Glucose [Mass/volume] in Serum or Plasma", 142, "mg/dL", 70, 99),
    Lab("bun", "3094-0", "Urea nitrogen [Mass/volume] in Serum or Plasma", 18, "mg/dL", 7, 20),
    Lab("creatinine", "2160-0", "Creatinine [Mass/volume] in Serum or Plasma", 1.1, "mg/dL", 0.7,
        1.3),
    Lab("sodium", "2951-2", "Sodium [Moles/volume] in Serum or Plasma", 139, "mmol/L", 136, 145),
    Lab("potassium", "2823-3", "Potassium [Moles/volume] in Serum or Plasma", 4.4, "mmol/L", 3.5,
        5.1),
    Lab("chloride", "2075-0", "Chloride [Moles/volume] in Serum or Plasma", 102, "mmol/L", 98, 107),
    Lab("co2", "2028-9", "Carbon dioxide, total [Moles/volume] in Serum or Plasma", 25, "mmol/L",
        22, 29),
    Lab("calcium", "17861-6", "Calcium [Mass/volume] in Serum or Plasma", 9.4, "mg/dL", 8.6, 10.3),
)
# fmt: on

# Single results: (Observation id, when drawn, result)
# fmt: off
SINGLES: tuple[tuple[str, Draw, Lab], ...] = (
    ("obs-liam-peanut-ige", Draw("liam", -150, "liam-well-child"),
     Lab("peanut-ige", "6206-7", "Peanut IgE Ab [Units/volume] in Serum", 8.2, "k[IU]/L", None, 0.35)),
    ("obs-robert-hba1c", Draw("robert", -75, "robert-diabetes-followup"),
     Lab("hba1c", "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", 7.4, "%", 4.0, 5.6)),
    ("obs-robert-psa", Draw("robert", -75, "robert-diabetes-followup"),
     Lab("psa", "2857-1", "Prostate specific Ag [Mass/volume] in Serum or Plasma", 1.8, "ng/mL", 0, 4.0)),
    ("obs-eleanor-creatinine", Draw("eleanor", -100, "eleanor-followup"),
     Lab("creatinine", "2160-0", "Creatinine [Mass/volume] in Serum or Plasma", 1.2, "mg/dL", 0.6, 1.1)),
    ("obs-eleanor-egfr", Draw("eleanor", -100, "eleanor-followup"),
     Lab("egfr", "33914-3", "Glomerular filtration rate/1.73 sq M.predicted", 42, "mL/min/{1.73_m2}", 60, None)),
    ("obs-karen-tsh", Draw("karen", -45),
     Lab("tsh", "3016-3", "Thyrotropin [Units/volume] in Serum or Plasma", 6.8, "m[IU]/L", 0.4, 4.0)),
)

# Panels: (when drawn, DiagnosticReport id, LOINC, display, results, conclusion)
PANELS: tuple[tuple[Draw, str, str, str, tuple[Lab, ...], str], ...] = (
    (Draw("james", -45, "james-annual-physical"), "dr-james-lipid-panel", "57698-3",
     "Lipid panel with direct LDL - Serum or Plasma", LIPIDS,
     "LDL above goal on current therapy; continue statin, recheck in 3 months."),
    (Draw("maria", -90, "maria-migraine"), "dr-maria-cbc", "58410-2",
     "CBC panel - Blood by Automated count", CBC,
     "Mild anemia; start oral iron and recheck in 3 months."),
    (Draw("robert", -75, "robert-diabetes-followup"), "dr-robert-bmp", "51990-0",
     "Basic metabolic panel - Blood", BMP,
     "Glucose above range, consistent with known type 2 diabetes."),
)

# Vital signs: (when measured, id prefix, blood pressure or None, kg, cm)
VITALS: tuple[tuple[Draw, str, tuple[int, int] | None, float, float], ...] = (
    (Draw("james", -45, "james-annual-physical"), "james", (134, 86), 88.5, 180.0),
    (Draw("daniel", -30, "daniel-knee-injury"), "daniel", None, 77.0, 183.0),
    (Draw("sophia", -120, "sophia-sports-physical"), "sophia", None, 54.2, 163.0),
    (Draw("liam", -150, "liam-well-child"), "liam", None, 27.0, 128.0),
)
# fmt: on


def build(clock: Clock) -> list[Json]:
    out: list[Json] = []
    for draw, report_id, loinc, display, results, conclusion in PANELS:
        out += panel(clock, draw, report_id, loinc, display, results, conclusion)
    for draw, key, bp, kg, cm in VITALS:
        out += vital_signs(clock, draw, key, bp, kg, cm)
    out += [numeric(clock, draw, id_, lab) for id_, draw, lab in SINGLES]
    out += sophia_confidential_labs(clock)
    return out


def interpretation(value: float, low: float | None, high: float | None) -> Json:
    if high is not None and value > high:
        return concept(INTERPRETATION, "H", "High")
    if low is not None and value < low:
        return concept(INTERPRETATION, "L", "Low")
    return concept(INTERPRETATION, "N", "Normal")


def _base(clock: Clock, draw: Draw, id_: str, category: tuple[str, str], code: Json) -> Json:
    res: Json = {"resourceType": "Observation", "id": id_}
    if draw.security:
        res["meta"] = {"security": labels(*draw.security)}
    res |= {
        "status": "final",
        "category": [concept(OBSERVATION_CATEGORY, *category)],
        "code": code,
        "subject": patient_ref(draw.patient),
    }
    if draw.visit:
        res["encounter"] = encounter_ref(draw.visit)
    res["effectiveDateTime"] = clock.at(draw.offset, "08:10")
    return res


def numeric(clock: Clock, draw: Draw, id_: str, lab: Lab) -> Json:
    res = _base(
        clock, draw, id_, ("laboratory", "Laboratory"), concept(LOINC, lab.loinc, lab.display)
    )
    rng: Json = {}
    if lab.low is not None:
        rng["low"] = ucum(lab.low, lab.unit)
    if lab.high is not None:
        rng["high"] = ucum(lab.high, lab.unit)
    res |= {
        "issued": clock.at(draw.offset, "14:30"),
        "performer": [org_ref("laboratory")],
        "valueQuantity": ucum(lab.value, lab.unit),
        "interpretation": [interpretation(lab.value, lab.low, lab.high)],
        "referenceRange": [rng],
    }
    return res


def coded(
    clock: Clock, draw: Draw, id_: str, loinc: str, display: str, result: tuple[str, str]
) -> Json:
    res = _base(clock, draw, id_, ("laboratory", "Laboratory"), concept(LOINC, loinc, display))
    flag = ("POS", "Positive") if result == POSITIVE else ("NEG", "Negative")
    res |= {
        "issued": clock.at(draw.offset + 2, "11:00"),
        "performer": [org_ref("laboratory")],
        "valueCodeableConcept": concept(SNOMED, *result),
        "interpretation": [concept(INTERPRETATION, *flag)],
        "referenceRange": [{"text": "Negative"}],
    }
    return res


def narrative(
    clock: Clock,
    draw: Draw,
    id_: str,
    loinc: str,
    display: str,
    text: str,
    category: tuple[str, str],
    interpreter: str,
) -> Json:
    res = _base(clock, draw, id_, category, concept(LOINC, loinc, display))
    res |= {
        "issued": clock.at(draw.offset + 1, "09:00"),
        "performer": [clinician_ref(interpreter)],
        "valueString": text,
    }
    return res


def report(
    clock: Clock,
    draw: Draw,
    id_: str,
    category: tuple[str, str],
    code: Json,
    results: list[Json],
    conclusion: str,
    **extra: object,
) -> Json:
    res: Json = {"resourceType": "DiagnosticReport", "id": id_}
    if draw.security:
        res["meta"] = {"security": labels(*draw.security)}
    res |= {
        "status": "final",
        "category": [concept(V2_0074, *category)],
        "code": code,
        "subject": patient_ref(draw.patient),
    }
    if draw.visit:
        res["encounter"] = encounter_ref(draw.visit)
    res |= {
        "effectiveDateTime": results[0]["effectiveDateTime"],
        "issued": results[-1]["issued"],
        "performer": [org_ref("laboratory" if category[0] != "RAD" else "radiology")],
    }
    res |= extra
    res["result"] = [ref("Observation", r["id"]) for r in results]
    res["conclusion"] = conclusion
    return res


def panel(
    clock: Clock,
    draw: Draw,
    report_id: str,
    loinc: str,
    display: str,
    labs: tuple[Lab, ...],
    conclusion: str,
) -> list[Json]:
    prefix = report_id.removeprefix("dr-").split("-")[0]
    results = [numeric(clock, draw, f"obs-{prefix}-{lab.key}", lab) for lab in labs]
    return [
        *results,
        report(
            clock,
            draw,
            report_id,
            ("LAB", "Laboratory"),
            concept(LOINC, loinc, display),
            results,
            conclusion,
        ),
    ]


def vital_signs(
    clock: Clock, draw: Draw, key: str, bp: tuple[int, int] | None, kg: float, cm: float
) -> list[Json]:
    category = ("vital-signs", "Vital Signs")
    out: list[Json] = []
    if bp:
        obs = _base(
            clock,
            draw,
            f"obs-{key}-blood-pressure",
            category,
            concept(LOINC, "85354-9", "Blood pressure panel with all children optional"),
        )
        obs["performer"] = [clinician_ref("jessica")]
        obs["component"] = [
            {
                "code": concept(LOINC, "8480-6", "Systolic blood pressure"),
                "valueQuantity": ucum(bp[0], "mm[Hg]"),
            },
            {
                "code": concept(LOINC, "8462-4", "Diastolic blood pressure"),
                "valueQuantity": ucum(bp[1], "mm[Hg]"),
            },
        ]
        out.append(obs)
    for suffix, loinc, display, value, unit in (
        ("weight", "29463-7", "Body weight", kg, "kg"),
        ("height", "8302-2", "Body height", cm, "cm"),
        (
            "bmi",
            "39156-5",
            "Body mass index (BMI) [Ratio]",
            round(kg / (cm / 100) ** 2, 1),
            "kg/m2",
        ),
    ):
        if suffix == "bmi" and not bp:
            continue  # BMI only for the adults measured at their physical
        obs = _base(clock, draw, f"obs-{key}-{suffix}", category, concept(LOINC, loinc, display))
        obs["performer"] = [clinician_ref("jessica")]
        obs["valueQuantity"] = ucum(value, unit)
        out.append(obs)
    return out


def sophia_confidential_labs(clock: Clock) -> list[Json]:
    """STI screening and a pregnancy test at the adolescent's confidential visit."""
    sti = Draw("sophia", -60, "sophia-reproductive-health", ("SEX", "STD", "R"))
    chlamydia = coded(
        clock,
        sti,
        "obs-sophia-chlamydia-naat",
        "43304-5",
        "Chlamydia trachomatis rRNA [Presence] in Specimen by NAA with probe detection",
        POSITIVE,
    )
    gonorrhea = coded(
        clock,
        sti,
        "obs-sophia-gonorrhea-naat",
        "43305-2",
        "Neisseria gonorrhoeae rRNA [Presence] in Specimen by NAA with probe detection",
        NEGATIVE,
    )
    sti_report = report(
        clock,
        sti,
        "dr-sophia-sti-screen",
        ("LAB", "Laboratory"),
        concept(LOINC, "11502-2", "Laboratory report", "Chlamydia and gonorrhea NAAT"),
        [chlamydia, gonorrhea],
        "Chlamydia positive, gonorrhea negative. Treated; test of cure advised.",
    )
    pregnancy = coded(
        clock,
        Draw("sophia", -60, "sophia-reproductive-health", ("SEX", "R")),
        "obs-sophia-pregnancy-test",
        "2106-3",
        "Choriogonadotropin (pregnancy test) [Presence] in Urine",
        NEGATIVE,
    )
    return [chlamydia, gonorrhea, sti_report, pregnancy]
