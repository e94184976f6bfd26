"""The clinic rules table (profiles/portal/scheduling.json), parsed fail-fast into frozen
dataclasses: a table that contradicts itself stops start-up with the reason.

Per clinic (an Organization, the Locations its Schedules name, the team that answers
requests) and per visit type (a `serviceType` coding): online or request-only, lead time,
horizon, hold time, the ages it is for, whether a parent of an adolescent may book it, the
labels an adolescent's booking carries, and the pre-visit clipboard Questionnaire.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from fhir_server.access.writes import ACTOR_KINDS

Doc = dict[str, Any]
TABLE = Path(__file__).resolve().parents[3] / "profiles" / "portal" / "scheduling.json"
BOOKING = frozenset({"online", "request"})
# https://hl7.org/fhir/R4/v3/Confidentiality/cs.html and the sensitivity codes family.json hides.
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
_TASK_STATUSES = frozenset(
    {"draft", "requested", "received", "accepted", "rejected", "ready", "cancelled",
     "in-progress", "on-hold", "failed", "completed", "entered-in-error"}
)  # fmt: skip


class TableError(ValueError):
    pass


def _fail(msg: str) -> TableError:
    return TableError(f"scheduling.json: {msg}")


@dataclass(frozen=True)
class VisitType:
    code: str
    display: str
    booking: str  # online | request
    lead: timedelta
    horizon: timedelta
    hold: timedelta
    ages: tuple[int, int] | None
    adolescent_proxy: bool
    confidential_labels: tuple[str, ...]
    clipboard: str | None  # "Questionnaire/<id>"

    @property
    def online(self) -> bool:
        return self.booking == "online"

    def labels(self) -> list[Doc]:
        """meta.security codings for an adolescent's booking of this type."""
        return [
            {
                "system": CONFIDENTIALITY if c in {"U", "L", "M", "N", "R", "V"} else ACT_CODE,
                "code": c,
            }
            for c in self.confidential_labels
        ]


@dataclass(frozen=True)
class Clinic:
    organization: str
    locations: frozenset[str]
    scheduling_team: str
    visit_types: tuple[VisitType, ...]

    def visit_type(self, code: str) -> VisitType | None:
        return next((v for v in self.visit_types if v.code == code), None)


@dataclass(frozen=True)
class TaskRule:
    code: Doc
    open_statuses: frozenset[str]

    def matches(self, task: Doc) -> bool:
        key = (self.code["system"], self.code["code"])
        return any(
            (c.get("system"), c.get("code")) == key
            for c in ((task.get("code") or {}).get("coding") or ())
            if isinstance(c, dict)
        )


@dataclass(frozen=True)
class SchedulingTable:
    system: str
    hold_extension: str
    patient_kinds: frozenset[str]
    staff_kinds: frozenset[str]
    never_kinds: frozenset[str]
    clinics: tuple[Clinic, ...]
    clipboard_task: TaskRule
    request_task: TaskRule

    def clinic_of_location(self, location: str) -> Clinic | None:
        return next((c for c in self.clinics if location in c.locations), None)

    def clinic(self, ref: str) -> Clinic | None:
        """A clinic by its Organization or one of its Locations."""
        return next((c for c in self.clinics if ref == c.organization or ref in c.locations), None)

    def codes_of(self, concepts: Any) -> list[str]:
        """The visit-type codes among `serviceType` CodeableConcepts."""
        out = []
        for cc in concepts if isinstance(concepts, list) else []:
            for c in (cc or {}).get("coding") or () if isinstance(cc, dict) else ():
                if isinstance(c, dict) and c.get("system") == self.system and c.get("code"):
                    out.append(str(c["code"]))
        return list(dict.fromkeys(out))

    def concept(self, vt: VisitType) -> Doc:
        return {
            "coding": [{"system": self.system, "code": vt.code, "display": vt.display}],
            "text": vt.display,
        }


def _minutes(raw: Any, where: str, low: int, high: int) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or not low <= raw <= high:
        raise _fail(f"{where} must be a whole number in [{low}, {high}]")
    return raw


def _ref(raw: Any, where: str, types: tuple[str, ...]) -> str:
    if not isinstance(raw, str) or raw.split("/", 1)[0] not in types or raw.count("/") != 1:
        raise _fail(f"{where} must be a reference to one of {list(types)}, not {raw!r}")
    return raw


def _task(raw: Any, where: str) -> TaskRule:
    if not isinstance(raw, dict):
        raise _fail(f"{where} must be an object")
    code = raw.get("code")
    if not isinstance(code, dict) or not code.get("system") or not code.get("code"):
        raise _fail(f"{where}.code needs a system and a code")
    statuses = raw.get("open_statuses")
    if not isinstance(statuses, list) or not set(statuses) <= _TASK_STATUSES:
        raise _fail(f"{where}.open_statuses must be R4 Task statuses")
    if "requested" not in statuses or {"completed", "cancelled"} & set(statuses):
        raise _fail(f"{where}: a new Task (requested) is open, a completed or cancelled one not")
    return TaskRule(
        {k: code[k] for k in ("system", "code", "display") if k in code}, frozenset(statuses)
    )


def _visit_type(raw: Any, where: str, defaults: Doc) -> VisitType:
    if not isinstance(raw, dict) or not isinstance(raw.get("code"), str) or not raw["code"]:
        raise _fail(f"{where}: each visit type is an object with a code")
    where = f"{where} {raw['code']}"
    known = {"code", "display", "booking", "lead_minutes", "horizon_days", "hold_minutes",
             "ages", "adolescent_proxy", "confidential_labels", "clipboard"}  # fmt: skip
    if unknown := set(raw) - known:
        raise _fail(f"{where}: unknown fields {sorted(unknown)}")
    booking = raw.get("booking")
    if booking not in BOOKING:
        raise _fail(f"{where}: booking must be one of {sorted(BOOKING)}")
    lead = _minutes(
        raw.get("lead_minutes", defaults["lead_minutes"]), f"{where} lead_minutes", 0, 60 * 24 * 365
    )
    horizon = _minutes(
        raw.get("horizon_days", defaults["horizon_days"]), f"{where} horizon_days", 1, 731
    )
    hold = _minutes(
        raw.get("hold_minutes", defaults["hold_minutes"]), f"{where} hold_minutes", 1, 120
    )
    if lead >= horizon * 24 * 60:
        raise _fail(
            f"{where}: the lead time ({lead} min) leaves nothing before the horizon ({horizon} d)"
        )
    ages = raw.get("ages")
    if ages is not None:
        if not (
            isinstance(ages, list)
            and len(ages) == 2
            and all(isinstance(a, int) and not isinstance(a, bool) for a in ages)
        ):
            raise _fail(f"{where}: ages must be [min, max] in whole years")
        if not 0 <= ages[0] <= ages[1]:
            raise _fail(f"{where}: ages {ages} is an empty range")
    proxy = raw.get("adolescent_proxy")
    if not isinstance(proxy, bool):
        raise _fail(f"{where}: adolescent_proxy must be true or false")
    labels = raw.get("confidential_labels", [])
    if not isinstance(labels, list) or not all(isinstance(x, str) and x for x in labels):
        raise _fail(f"{where}: confidential_labels must be a list of codes")
    if labels and proxy:
        # A type that is hidden from parents cannot also be one they may book.
        raise _fail(
            f"{where}: a confidential visit type cannot allow a parent to book it for an adolescent"
        )
    clipboard = raw.get("clipboard")
    if clipboard is not None:
        clipboard = _ref(clipboard, f"{where} clipboard", ("Questionnaire",))
        if booking == "request":
            pass  # a request booked by staff asks for the clipboard too
    display = raw.get("display", raw["code"])
    if not isinstance(display, str):
        raise _fail(f"{where}: display must be a string")
    return VisitType(
        code=raw["code"],
        display=display,
        booking=str(booking),
        lead=timedelta(minutes=lead),
        horizon=timedelta(days=horizon),
        hold=timedelta(minutes=hold),
        ages=(ages[0], ages[1]) if ages is not None else None,
        adolescent_proxy=proxy,
        confidential_labels=tuple(labels),
        clipboard=clipboard,
    )


def _kinds(raw: Any, where: str) -> frozenset[str]:
    if not isinstance(raw, list) or not all(isinstance(k, str) for k in raw):
        raise _fail(f"actors.{where} must be a list of writer kinds")
    if unknown := set(raw) - set(ACTOR_KINDS):
        raise _fail(f"actors.{where}: unknown writer kinds {sorted(unknown)}")
    return frozenset(raw)


def parse_table(raw: Any) -> SchedulingTable:
    """The table as frozen rules, or TableError naming what is wrong or contradictory."""
    if not isinstance(raw, dict):
        raise _fail("expected an object")
    fields = {"note", "visit_type_system", "hold_extension", "defaults", "actors",
              "clipboard_task", "request_task", "clinics"}  # fmt: skip
    if unknown := set(raw) - fields:
        raise _fail(f"unknown fields {sorted(unknown)}")
    system, ext = raw.get("visit_type_system"), raw.get("hold_extension")
    if not isinstance(system, str) or not system.startswith("http"):
        raise _fail("visit_type_system must be a code system URL")
    if not isinstance(ext, str) or not ext.startswith("http"):
        raise _fail("hold_extension must be an extension URL")
    defaults = raw.get("defaults")
    if not isinstance(defaults, dict) or set(defaults) != {
        "lead_minutes",
        "horizon_days",
        "hold_minutes",
    }:
        raise _fail("defaults must give lead_minutes, horizon_days and hold_minutes")
    actors = raw.get("actors")
    if not isinstance(actors, dict) or set(actors) != {"patient", "staff", "never"}:
        raise _fail("actors must list patient, staff and never")
    patient, staff, never = (_kinds(actors[k], k) for k in ("patient", "staff", "never"))
    if (patient & staff) or (patient & never) or (staff & never):
        raise _fail("a writer kind is in two of actors.patient, actors.staff, actors.never")
    if missing := set(ACTOR_KINDS) - patient - staff - never:
        raise _fail(f"actors: writer kinds {sorted(missing)} are in none of the lists")
    clinics_raw = raw.get("clinics")
    if not isinstance(clinics_raw, list) or not clinics_raw:
        raise _fail("clinics must be a non-empty list")
    clinics: list[Clinic] = []
    seen_locations: dict[str, str] = {}
    for c in clinics_raw:
        if not isinstance(c, dict):
            raise _fail("each clinic is an object")
        org = _ref(c.get("organization"), "clinic organization", ("Organization",))
        locs = c.get("locations")
        if not isinstance(locs, list) or not locs:
            raise _fail(f"{org}: locations must list the clinic's Locations")
        for loc in locs:
            _ref(loc, f"{org} location", ("Location",))
            if loc in seen_locations:
                raise _fail(f"{loc} belongs to both {seen_locations[loc]} and {org}")
            seen_locations[loc] = org
        team = _ref(
            c.get("scheduling_team"),
            f"{org} scheduling_team",
            ("CareTeam", "Organization", "PractitionerRole", "Practitioner"),
        )
        vts = c.get("visit_types")
        if not isinstance(vts, list) or not vts:
            raise _fail(f"{org}: visit_types must be a non-empty list")
        parsed = tuple(_visit_type(v, org, defaults) for v in vts)
        codes = [v.code for v in parsed]
        if len(codes) != len(set(codes)):
            raise _fail(f"{org}: a visit type is listed twice")
        clinics.append(Clinic(org, frozenset(locs), team, parsed))
    if len({c.organization for c in clinics}) != len(clinics):
        raise _fail("a clinic is listed twice")
    clip, req = (
        _task(raw.get("clipboard_task"), "clipboard_task"),
        _task(raw.get("request_task"), "request_task"),
    )
    if (clip.code["system"], clip.code["code"]) == (req.code["system"], req.code["code"]):
        raise _fail("clipboard_task and request_task need different codes")
    return SchedulingTable(system, ext, patient, staff, never, tuple(clinics), clip, req)


@lru_cache(maxsize=4)
def load_table(path: Path = TABLE) -> SchedulingTable:
    return parse_table(json.loads(path.read_text()))
