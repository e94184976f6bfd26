"""Small builders shared by the seed modules: code systems, references, dates relative to today.

Nothing here reads the wall clock: every date is computed from the ``today`` that
:class:`Clock` is given, so the same day always gives the same population.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

Json = dict[str, Any]

# Code systems (https://hl7.org/fhir/R4/terminologies-systems.html)
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CVX = "http://hl7.org/fhir/sid/cvx"
UCUM = "http://unitsofmeasure.org"
NPI = "http://hl7.org/fhir/sid/us-npi"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
ROLE_CODE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
PARTICIPATION_TYPE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
V2_0276 = "http://terminology.hl7.org/CodeSystem/v2-0276"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
V2_0360 = "http://terminology.hl7.org/CodeSystem/v2-0360|2.7"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"

# Project namespaces (fictional, example.org).
EDIPI = "http://mhs.example.org/fhir/sid/edipi"
MHS_PATIENT_PROFILE = "https://mhs.example.org/fhir/StructureDefinition/mhs-patient"
MHS_QUESTIONNAIRE_BASE = "https://mhs.example.org/fhir/Questionnaire"
VA_SOURCE = "https://va.example.org/fhir"

# Clinic wall-clock time. Eastern time with its DST rules; a fixed offset only if the
# machine has no time zone database.
try:
    CLINIC_TZ: tzinfo = ZoneInfo("America/New_York")
except ZoneInfoNotFoundError:  # pragma: no cover - depends on the machine
    from datetime import timezone

    CLINIC_TZ = timezone(timedelta(hours=-5))

# Security labels (https://hl7.org/fhir/R4/security-labels.html)
_LABELS: dict[str, tuple[str, str]] = {
    "SEX": (ACT_CODE, "sexuality and reproductive health information sensitivity"),
    "STD": (ACT_CODE, "sexually transmitted disease information sensitivity"),
    "PSY": (ACT_CODE, "psychiatry disorder information sensitivity"),
    "ETH": (ACT_CODE, "substance abuse information sensitivity"),
    "HIV": (ACT_CODE, "HIV/AIDS information sensitivity"),
    "N": (CONFIDENTIALITY, "normal"),
    "R": (CONFIDENTIALITY, "restricted"),
    "V": (CONFIDENTIALITY, "very restricted"),
}


def coding(system: str, code: str, display: str | None = None) -> Json:
    out: Json = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def concept(system: str, code: str, display: str, text: str | None = None) -> Json:
    """A CodeableConcept with one coding; ``text`` defaults to the display."""
    return {"coding": [coding(system, code, display)], "text": text or display}


def text_concept(text: str) -> Json:
    return {"text": text}


def ref(resource_type: str, id_: str, display: str | None = None) -> Json:
    out: Json = {"reference": f"{resource_type}/{id_}"}
    if display:
        out["display"] = display
    return out


def labels(*codes: str) -> list[Json]:
    """``meta.security`` codings, e.g. ``labels("SEX", "STD", "R")``."""
    return [coding(_LABELS[c][0], c, _LABELS[c][1]) for c in codes]


def ucum(value: float | int, code: str, unit: str | None = None) -> Json:
    return {"value": value, "unit": unit or code, "system": UCUM, "code": code}


def text_attachment(text: str, title: str, created: str, content_type: str = "text/plain") -> Json:
    """An inline Attachment with its size and SHA-1 hash (both as FHIR defines them)."""
    return bytes_attachment(text.encode("utf-8"), title, created, f"{content_type}; charset=utf-8")


def bytes_attachment(data: bytes, title: str, created: str, content_type: str) -> Json:
    return {
        "contentType": content_type,
        "language": "en-US",
        "data": base64.b64encode(data).decode("ascii"),
        "size": len(data),
        "hash": base64.b64encode(hashlib.sha1(data).digest()).decode("ascii"),
        "title": title,
        "creation": created,
    }


def shift_years(day: date, years: int) -> date:
    """The same calendar day ``years`` later (earlier if negative); 29 Feb becomes 28 Feb."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return day.replace(year=day.year + years, day=28)


def age_on(birth: date, day: date) -> int:
    """Completed years of life on ``day``, the way the access policy counts them."""
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


@dataclass(frozen=True)
class Clock:
    """Dates and times relative to the seeding day."""

    today: date

    def day(self, offset: int) -> date:
        return self.today + timedelta(days=offset)

    def clinic_day(self, offset: int) -> date:
        """A weekday near ``today + offset``: a weekend moves back to the Friday before."""
        day = self.day(offset)
        while day.weekday() >= 5:
            day -= timedelta(days=1)
        return day

    def working_day(self, n: int) -> date:
        """The ``n``-th weekday after today (``n`` >= 1)."""
        day, seen = self.today, 0
        while seen < n:
            day += timedelta(days=1)
            if day.weekday() < 5:
                seen += 1
        return day

    def date(self, offset: int) -> str:
        return self.day(offset).isoformat()

    def birth_date(self, years: int, days_since_birthday: int) -> str:
        """A birth date that makes someone exactly ``years`` old today."""
        return (shift_years(self.today, -years) - timedelta(days=days_since_birthday)).isoformat()

    def at(self, offset: int, hhmm: str, minutes_after: int = 0) -> str:
        """Local clinic date-time on the clinic day ``today + offset``, e.g. ``-05:00``."""
        return stamp(self.clinic_day(offset), hhmm, minutes_after)


def stamp(day: date, hhmm: str, minutes_after: int = 0) -> str:
    hour, minute = (int(part) for part in hhmm.split(":"))
    moment = datetime.combine(day, time(hour, minute), tzinfo=CLINIC_TZ)
    moment += timedelta(minutes=minutes_after)
    # Adding a timedelta keeps the original UTC offset; normalise it for the new moment.
    return moment.astimezone(CLINIC_TZ).isoformat()
