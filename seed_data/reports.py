"""Radiology and pathology: DiagnosticReports with their result Observations, the
colonoscopy that produced a specimen, and a PDF report stored as a Binary."""

from __future__ import annotations

import base64

from seed_data.common import LOINC, SNOMED, Clock, Json, concept, ref, text_attachment
from seed_data.directory import clinician_ref, location_ref, patient_ref
from seed_data.labs import Draw, Lab, narrative, numeric, report


def build(clock: Clock) -> list[Json]:
    return [*robert_knee_xray(clock), *robert_polyp_pathology(clock), *marcus_ankle_xray(clock)]


def robert_knee_xray(clock: Clock) -> list[Json]:
    draw = Draw("robert", -210)
    finding = narrative(
        clock,
        draw,
        "obs-robert-knee-xray-finding",
        "18782-3",
        "Radiology Study observation (narrative)",
        "Moderate medial joint space narrowing with marginal osteophytes. No fracture or effusion.",
        ("imaging", "Imaging"),
        "omar",
    )
    text = (
        "XR KNEE LEFT, 3 VIEWS\nFindings: moderate medial joint space narrowing, marginal "
        "osteophytes, no fracture, no effusion.\nImpression: moderate osteoarthritis.\n"
        "Interpreted by Omar Haddad, MD"
    )
    dr = report(
        clock,
        draw,
        "dr-robert-knee-xray",
        ("RAD", "Radiology"),
        concept(LOINC, "18748-4", "Diagnostic imaging study", "XR Knee, left, 3 views"),
        [finding],
        "Moderate osteoarthritis of the left knee.",
        resultsInterpreter=[clinician_ref("omar")],
        presentedForm=[text_attachment(text, "Knee X-ray report", clock.at(-209, "09:00"))],
    )
    return [finding, dr]


def robert_polyp_pathology(clock: Clock) -> list[Json]:
    draw = Draw("robert", -160)
    procedure = {
        "resourceType": "Procedure",
        "id": "proc-robert-colonoscopy",
        "status": "completed",
        "code": concept(SNOMED, "73761001", "Colonoscopy"),
        "subject": patient_ref("robert"),
        "performedDateTime": clock.at(-160, "07:45"),
        "performer": [{"actor": clinician_ref("michael")}],
        "location": location_ref("loc-lakeside-mmc"),
        "reasonCode": [concept(SNOMED, "68496003", "Polyp of colon")],
        "report": [ref("DiagnosticReport", "dr-robert-polyp-pathology")],
    }
    diagnosis = narrative(
        clock,
        draw,
        "obs-robert-polyp-diagnosis",
        "22637-3",
        "Pathology report final diagnosis Narrative",
        "Sigmoid colon polyp, polypectomy: tubular adenoma with low-grade dysplasia. Margins free.",
        ("laboratory", "Laboratory"),
        "helen",
    )
    size = numeric(
        clock,
        draw,
        "obs-robert-polyp-size",
        Lab(
            "polyp-size",
            "33756-8",
            "Polyp size greatest dimension by CAP cancer protocols",
            6,
            "mm",
            None,
            None,
        ),
    )
    del size["interpretation"], size["referenceRange"]
    text = (
        "SURGICAL PATHOLOGY REPORT\nSpecimen: sigmoid colon polyp (polypectomy)\n"
        "Diagnosis: tubular adenoma, low-grade dysplasia; margins free.\n"
        "Size: 6 mm.\nPathologist: Helen Novak, MD"
    )
    dr = report(
        clock,
        draw,
        "dr-robert-polyp-pathology",
        ("SP", "Surgical Pathology"),
        concept(LOINC, "11526-1", "Pathology study", "Surgical pathology report"),
        [diagnosis, size],
        "Tubular adenoma, low-grade dysplasia. Repeat colonoscopy in 7 years.",
        resultsInterpreter=[clinician_ref("helen")],
        presentedForm=[text_attachment(text, "Surgical pathology report", clock.at(-158, "12:00"))],
    )
    return [procedure, diagnosis, size, dr]


def marcus_ankle_xray(clock: Clock) -> list[Json]:
    draw = Draw("marcus", -25, "marcus-ankle")
    finding = narrative(
        clock,
        draw,
        "obs-marcus-ankle-xray-finding",
        "18782-3",
        "Radiology Study observation (narrative)",
        "No acute fracture or dislocation. Lateral soft tissue swelling.",
        ("imaging", "Imaging"),
        "omar",
    )
    lines = [
        "LAKESIDE MILITARY MEDICAL CENTER - RADIOLOGY",
        f"Patient: Marcus A. Bell   Exam date: {clock.clinic_day(-25).isoformat()}",
        "Exam: XR ANKLE RIGHT, 3 VIEWS",
        "Findings: no acute fracture or dislocation; lateral soft tissue swelling.",
        "Impression: soft tissue injury, no fracture.",
        "Interpreted by Omar Haddad, MD",
    ]
    dr = report(
        clock,
        draw,
        "dr-marcus-ankle-xray",
        ("RAD", "Radiology"),
        concept(LOINC, "18748-4", "Diagnostic imaging study", "XR Ankle, right, 3 views"),
        [finding],
        "No fracture. Ankle sprain; Ottawa rules negative.",
        resultsInterpreter=[clinician_ref("omar")],
        presentedForm=[
            {
                "contentType": "application/pdf",
                "url": "Binary/bin-marcus-ankle-xray-report",
                "title": "Ankle X-ray report (PDF)",
                "creation": clock.at(-24, "09:00"),
            }
        ],
    )
    binary = {
        "resourceType": "Binary",
        "id": "bin-marcus-ankle-xray-report",
        "contentType": "application/pdf",
        "securityContext": ref("DiagnosticReport", "dr-marcus-ankle-xray"),
        "data": base64.b64encode(tiny_pdf(lines)).decode("ascii"),
    }
    return [finding, dr, binary]


def tiny_pdf(lines: list[str]) -> bytes:
    """A one-page PDF 1.4 with the given lines in Helvetica, built byte for byte."""

    def escape(s: str) -> str:
        return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    text = " T* ".join(f"({escape(line)}) Tj" for line in lines)
    stream = f"BT /F1 11 Tf 14 TL 72 720 Td {text} ET".encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)
