"""Clinical notes (DocumentReference), pre-visit clipboards (Questionnaire) and answers."""

from __future__ import annotations

from dataclasses import dataclass

from seed_data.common import (
    LOINC,
    MHS_QUESTIONNAIRE_BASE,
    SNOMED,
    Clock,
    Json,
    coding,
    concept,
    labels,
    ref,
    stamp,
    text_attachment,
    text_concept,
)
from seed_data.directory import clinician_ref, org_ref, patient_ref
from seed_data.scheduling import encounter_ref, visit

DOC_CATEGORY = "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category"
PREVISIT_URL = f"{MHS_QUESTIONNAIRE_BASE}/previsit-clipboard"
PHQ2_URL = f"{MHS_QUESTIONNAIRE_BASE}/phq-2"


@dataclass(frozen=True)
class Note:
    id: str
    visit: str  # past visit id without "appt-"
    loinc: tuple[str, str]
    title: str
    author: str
    setting: tuple[str, str] | str  # SNOMED specialty or text
    body: str
    security: tuple[str, ...] = ()


PROGRESS = ("11506-3", "Progress note")
FAMILY = ("419772000", "Family practice")
# fmt: off
NOTES: tuple[Note, ...] = (
    Note("doc-james-annual-physical-note", "james-annual-physical", PROGRESS, "Annual physical",
         "rachel", FAMILY,
         "42-year-old active-duty male for periodic health assessment. BP 134/86. LDL 138 on atorvastatin 20 mg. Plan: lifestyle counselling, continue lisinopril, lipid recheck in 3 months. Fit for duty."),
    Note("doc-liam-well-child-note", "liam-well-child", PROGRESS, "Well-child visit", "rachel",
         FAMILY,
         "8-year-old, growing well. Known peanut allergy (IgE 8.2): epinephrine auto-injector renewed, school action plan given to mother. Eczema controlled with hydrocortisone."),
    Note("doc-sophia-reproductive-health-note", "sophia-reproductive-health", PROGRESS,
         "Confidential adolescent visit", "rachel", FAMILY,
         "Confidential visit requested by the patient. Contraception counselling; combined oral contraceptive started. STI screening sent (chlamydia positive, treated). Patient declines parental involvement; confidentiality explained per minor consent rules.",
         ("SEX", "STD", "R")),
    Note("doc-sophia-bh-intake-note", "sophia-bh-intake", ("11488-4", "Consult note"),
         "Behavioral health intake", "ethan", "Behavioral health",
         "15-year-old referred for worry and trouble sleeping before exams. PHQ-2 score 3. Generalized anxiety; no safety concerns. Plan: cognitive behavioural therapy, follow-up in two weeks.",
         ("PSY", "R")),
    Note("doc-daniel-knee-note", "daniel-knee-injury", PROGRESS, "Knee injury", "rachel", FAMILY,
         "19-year-old with left knee valgus injury playing soccer. Grade I MCL sprain. Brace, ice, physical therapy; recheck in 4 weeks."),
    Note("doc-eleanor-followup-note", "eleanor-followup", PROGRESS, "Follow-up visit", "michael",
         ("419192003", "Internal medicine"),
         "84-year-old with atrial fibrillation on apixaban and mild Alzheimer's disease, accompanied by her daughter (healthcare power of attorney). Rate controlled. eGFR 42: apixaban dose reviewed, unchanged."),
    Note("doc-marcus-duty-limitation", "marcus-ankle", PROGRESS,
         "Temporary physical profile (duty limitation)", "laura", FAMILY,
         "Right ankle sprain, no fracture. Temporary profile for 21 days: no running, rucking or jumping; may walk at own pace and wear running shoes. Re-evaluate before return to full duty."),
)
# fmt: on


def build(clock: Clock) -> list[Json]:
    return [
        *(document(clock, note) for note in NOTES),
        previsit_questionnaire(),
        phq2_questionnaire(),
        james_previsit_answers(clock),
        sophia_phq2_answers(clock),
        james_previsit_task(clock),
    ]


def document(clock: Clock, note: Note) -> Json:
    v = visit(note.visit)
    written = clock.at(v.day, v.hhmm, 45)
    setting = (
        concept(SNOMED, *note.setting)
        if isinstance(note.setting, tuple)
        else text_concept(note.setting)
    )
    res: Json = {"resourceType": "DocumentReference", "id": note.id}
    if note.security:
        res["meta"] = {"security": labels(*note.security)}
    res |= {
        "status": "current",
        "docStatus": "final",
        "type": concept(LOINC, *note.loinc),
        "category": [concept(DOC_CATEGORY, "clinical-note", "Clinical Note")],
        "subject": patient_ref(v.patient),
        "date": written,
        "author": [clinician_ref(note.author)],
        "custodian": org_ref("mmc"),
        "description": note.title,
    }
    if note.security:
        res["securityLabel"] = [{"coding": [label]} for label in labels(*note.security)]
    res["content"] = [{"attachment": text_attachment(note.body, note.title, written)}]
    res["context"] = {
        "encounter": [encounter_ref(note.visit)],
        "period": {"start": clock.at(v.day, v.hhmm), "end": clock.at(v.day, v.hhmm, v.minutes)},
        "practiceSetting": setting,
    }
    return res


def _choice(system: str, options: tuple[tuple[str, str], ...]) -> list[Json]:
    return [{"valueCoding": coding(system, code, display)} for code, display in options]


TOBACCO = (("266919005", "Never smoked tobacco"), ("8517006", "Ex-smoker"), ("77176002", "Smoker"))
PHQ_ANSWERS = (
    ("LA6568-5", "Not at all"),
    ("LA6569-3", "Several days"),
    ("LA6570-1", "More than half the days"),
    ("LA6571-9", "Nearly every day"),
)


def previsit_questionnaire() -> Json:
    return {
        "resourceType": "Questionnaire",
        "id": "previsit-clipboard",
        "url": PREVISIT_URL,
        "version": "1.0.0",
        "name": "PreVisitClipboard",
        "title": "Pre-visit clipboard",
        "status": "active",
        "subjectType": ["Patient"],
        "date": "2025-01-15",
        "publisher": "Lakeside Military Medical Center",
        "description": "Questions a patient answers in the portal before a primary care visit.",
        "item": [
            {
                "linkId": "reason",
                "text": "What is the main reason for your visit?",
                "type": "text",
                "required": True,
            },
            {
                "linkId": "medications-changed",
                "text": "Have your medications changed since your last visit?",
                "type": "boolean",
                "required": True,
            },
            {
                "linkId": "medication-changes",
                "text": "Which medications changed, and how?",
                "type": "text",
                "enableWhen": [
                    {"question": "medications-changed", "operator": "=", "answerBoolean": True}
                ],
            },
            {
                "linkId": "allergies-changed",
                "text": "Do you have any new allergies?",
                "type": "boolean",
            },
            {
                "linkId": "pain-score",
                "code": [
                    coding(
                        LOINC,
                        "72514-3",
                        "Pain severity - 0-10 verbal numeric rating [Score] - Reported",
                    )
                ],
                "text": "Rate your pain today from 0 (none) to 10 (worst imaginable).",
                "type": "integer",
            },
            {
                "linkId": "tobacco",
                "code": [coding(LOINC, "72166-2", "Tobacco smoking status")],
                "text": "Do you smoke tobacco?",
                "type": "choice",
                "answerOption": _choice(SNOMED, TOBACCO),
            },
            {
                "linkId": "deployment",
                "text": "Have you deployed or travelled outside the United States in the last "
                "12 months?",
                "type": "boolean",
            },
        ],
    }


def phq2_questionnaire() -> Json:
    def question(code: str, text: str) -> Json:
        return {
            "linkId": code,
            "code": [coding(LOINC, code, text)],
            "text": text,
            "type": "choice",
            "required": True,
            "answerOption": _choice(LOINC, PHQ_ANSWERS),
        }

    return {
        "resourceType": "Questionnaire",
        "id": "phq-2",
        "url": PHQ2_URL,
        "version": "1.0.0",
        "name": "PHQ2",
        "title": "Patient Health Questionnaire-2 (PHQ-2)",
        "status": "active",
        "subjectType": ["Patient"],
        "date": "2025-01-15",
        "publisher": "Lakeside Military Medical Center",
        "description": "Depression screening asked before behavioral health and annual visits.",
        "code": [
            coding(LOINC, "55757-9", "Patient Health Questionnaire 2 item (PHQ-2) [Reported]")
        ],
        "item": [
            {
                "linkId": "intro",
                "type": "display",
                "text": "Over the last 2 weeks, how often have you been bothered by the following "
                "problems?",
            },
            question("44250-9", "Little interest or pleasure in doing things"),
            question("44255-8", "Feeling down, depressed, or hopeless"),
            {
                "linkId": "55758-7",
                "code": [
                    coding(
                        LOINC,
                        "55758-7",
                        "Patient Health Questionnaire 2 item (PHQ-2) total score [Reported]",
                    )
                ],
                "text": "PHQ-2 total score",
                "type": "integer",
                "readOnly": True,
            },
        ],
    }


def _answer(link_id: str, text: str, value: Json) -> Json:
    return {"linkId": link_id, "text": text, "answer": [value]}


def james_previsit_answers(clock: Clock) -> Json:
    return {
        "resourceType": "QuestionnaireResponse",
        "id": "qr-james-previsit-annual",
        "questionnaire": PREVISIT_URL,
        "status": "completed",
        "subject": patient_ref("james"),
        "encounter": encounter_ref("james-annual-physical"),
        "authored": clock.at(-46, "20:05"),
        "author": patient_ref("james"),
        "source": patient_ref("james"),
        "item": [
            _answer(
                "reason",
                "What is the main reason for your visit?",
                {"valueString": "Annual physical; occasional lower back stiffness."},
            ),
            _answer(
                "medications-changed",
                "Have your medications changed since your last visit?",
                {"valueBoolean": False},
            ),
            _answer("allergies-changed", "Do you have any new allergies?", {"valueBoolean": False}),
            _answer(
                "pain-score",
                "Rate your pain today from 0 (none) to 10 (worst imaginable).",
                {"valueInteger": 2},
            ),
            _answer(
                "tobacco", "Do you smoke tobacco?", {"valueCoding": coding(SNOMED, *TOBACCO[1])}
            ),
            _answer(
                "deployment",
                "Have you deployed or travelled outside the United States in the last 12 months?",
                {"valueBoolean": True},
            ),
        ],
    }


def sophia_phq2_answers(clock: Clock) -> Json:
    return {
        "resourceType": "QuestionnaireResponse",
        "id": "qr-sophia-phq-2",
        "meta": {"security": labels("PSY", "R")},
        "questionnaire": PHQ2_URL,
        "status": "completed",
        "subject": patient_ref("sophia"),
        "encounter": encounter_ref("sophia-bh-intake"),
        "authored": clock.at(-50, "14:50"),
        "author": patient_ref("sophia"),
        "source": patient_ref("sophia"),
        "item": [
            _answer(
                "44250-9",
                "Little interest or pleasure in doing things",
                {"valueCoding": coding(LOINC, *PHQ_ANSWERS[1])},
            ),
            _answer(
                "44255-8",
                "Feeling down, depressed, or hopeless",
                {"valueCoding": coding(LOINC, *PHQ_ANSWERS[2])},
            ),
            _answer("55758-7", "PHQ-2 total score", {"valueInteger": 3}),
        ],
    }


def james_previsit_task(clock: Clock) -> Json:
    """Asks the sponsor to fill in the clipboard before his booked follow-up."""
    v = visit("james-lipid-followup")
    return {
        "resourceType": "Task",
        "id": "task-james-previsit-clipboard",
        "status": "requested",
        "intent": "order",
        "code": text_concept("Complete pre-visit clipboard"),
        "description": "Please answer the pre-visit clipboard before your appointment.",
        "focus": ref("Appointment", v.id),
        "for": patient_ref("james"),
        "executionPeriod": {"end": stamp(clock.working_day(v.day), v.hhmm)},
        "authoredOn": clock.at(-1, "06:00"),
        "requester": org_ref("family-medicine"),
        "owner": patient_ref("james"),
        "input": [
            {"type": text_concept("questionnaire"), "valueCanonical": PREVISIT_URL},
        ],
    }
