"""The prescriptions table (profiles/portal/medications.json), parsed fail-fast into frozen
rules: which MedicationRequests count, the renewal window, the excluded classes, the refill
and renewal Task codes and who may ask for them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from fhir_server.access.writes import ACTOR_KINDS

TABLE = Path(__file__).resolve().parents[3] / "profiles" / "portal" / "medications.json"
WHERE = "medications.json"
# The reason codes the rules give (eligibility.py); the table must word every one.
REASONS = frozenset(
    {
        "refills-remain",
        "no-refills-left",
        "expired",
        "renewal-window-passed",
        "excluded-class",
        "not-an-active-order",
    }
)
# https://hl7.org/fhir/R4/valueset-task-status.html
TASK_STATUSES = frozenset(
    {
        "draft", "requested", "received", "accepted", "rejected", "ready", "cancelled",
        "in-progress", "on-hold", "failed", "completed", "entered-in-error",
    }
)  # fmt: skip

Doc = dict[str, Any]


@dataclass(frozen=True)
class ExcludedClass:
    name: str
    extension_url: str | None
    extension_codes: frozenset[str]
    codings: frozenset[tuple[str, str]]

    def matches(self, mr: Doc) -> bool:
        for ext in mr.get("extension") or ():
            if (
                isinstance(ext, dict)
                and ext.get("url") == self.extension_url
                and _ext_code(ext) in self.extension_codes
            ):
                return True
        concept = mr.get("medicationCodeableConcept") or {}
        return any(
            (c.get("system"), c.get("code")) in self.codings
            for c in concept.get("coding") or ()
            if isinstance(c, dict)
        )


def _ext_code(ext: Doc) -> str | None:
    for k in ("valueCode", "valueString"):
        if isinstance(ext.get(k), str):
            return str(ext[k])
    coding = (ext.get("valueCoding") or {}) if isinstance(ext.get("valueCoding"), dict) else {}
    return coding.get("code")


@dataclass(frozen=True)
class TaskRules:
    code: Doc
    open_statuses: frozenset[str]
    requesters: frozenset[str]  # write-rule actor kinds (access/writes.py) who may ask

    def is_ours(self, task: Doc) -> bool:
        want = (self.code["system"], self.code["code"])
        return any(
            (c.get("system"), c.get("code")) == want
            for c in (task.get("code") or {}).get("coding") or ()
            if isinstance(c, dict)
        )

    def code_concept(self) -> Doc:
        return {"coding": [self.code], "text": self.code.get("display", self.code["code"])}


@dataclass(frozen=True)
class MedicationRules:
    extension_url: str
    reason_system: str
    statuses: frozenset[str]
    intents: frozenset[str]
    renewal_window_days: int
    reasons: dict[str, str]
    excluded: tuple[ExcludedClass, ...]
    refill: TaskRules
    refill_owners: frozenset[str]
    renewal: TaskRules
    pcm_role: tuple[str, str]

    def excluded_class(self, mr: Doc) -> ExcludedClass | None:
        return next((c for c in self.excluded if c.matches(mr)), None)


def _str(raw: Any, where: str) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError(f"{WHERE}: {where} must be a non-empty string")
    return raw


def _strs(raw: Any, where: str, allowed: frozenset[str] | None = None) -> frozenset[str]:
    if not isinstance(raw, list) or not raw or not all(isinstance(x, str) for x in raw):
        raise ValueError(f"{WHERE}: {where} must be a non-empty list of strings")
    if allowed is not None and (bad := set(raw) - allowed):
        raise ValueError(f"{WHERE}: {where}: unknown values {sorted(bad)}")
    return frozenset(raw)


def _coding(raw: Any, where: str) -> Doc:
    if not isinstance(raw, dict):
        raise ValueError(f"{WHERE}: {where} must be a Coding")
    out = {"system": _str(raw.get("system"), f"{where}.system")}
    out["code"] = _str(raw.get("code"), f"{where}.code")
    if "display" in raw:
        out["display"] = _str(raw["display"], f"{where}.display")
    return out


def _task(raw: Any, where: str) -> TaskRules:
    if not isinstance(raw, dict):
        raise ValueError(f"{WHERE}: {where} must be an object")
    statuses = _strs(raw.get("open_statuses"), f"{where}.open_statuses", TASK_STATUSES)
    if "requested" not in statuses or "completed" in statuses:
        raise ValueError(f"{WHERE}: {where}: a new Task (requested) is open, a completed one not")
    requesters = _strs(raw.get("requesters"), f"{where}.requesters", frozenset(ACTOR_KINDS))
    if requesters & {"adolescent", "basic"}:
        # The family table keeps a teen's prescriptions from parents; Basic cannot write.
        raise ValueError(f"{WHERE}: {where}.requesters may not name adolescent or basic")
    return TaskRules(_coding(raw.get("task_code"), f"{where}.task_code"), statuses, requesters)


def _excluded(raw: Any, i: int) -> ExcludedClass:
    where = f"eligibility.excluded[{i}]"
    if not isinstance(raw, dict):
        raise ValueError(f"{WHERE}: {where} must be an object")
    ext = raw.get("extension")
    url, codes = None, frozenset[str]()
    if ext is not None:
        if not isinstance(ext, dict):
            raise ValueError(f"{WHERE}: {where}.extension must be an object")
        url = _str(ext.get("url"), f"{where}.extension.url")
        codes = _strs(ext.get("codes"), f"{where}.extension.codes")
    codings = raw.get("codings", [])
    if not isinstance(codings, list):
        raise ValueError(f"{WHERE}: {where}.codings must be a list")
    parsed = frozenset(
        (c["system"], c["code"]) for c in (_coding(x, f"{where}.codings[]") for x in codings)
    )
    if url is None and not parsed:
        raise ValueError(f"{WHERE}: {where} needs an extension or codings to recognise it")
    return ExcludedClass(_str(raw.get("name"), f"{where}.name"), url, codes, parsed)


def parse_table(raw: Any) -> MedicationRules:
    """The table as frozen rules, or ValueError saying what is wrong."""
    if not isinstance(raw, dict) or set(raw) - {"note", "eligibility", "refill", "renewal"}:
        raise ValueError(f"{WHERE}: expected note, eligibility, refill, renewal")
    el = raw.get("eligibility")
    if not isinstance(el, dict):
        raise ValueError(f"{WHERE}: eligibility must be an object")
    url = _str(el.get("extension_url"), "eligibility.extension_url")
    if not url.startswith("https://mhs.example.org/fhir/StructureDefinition/"):
        raise ValueError(f"{WHERE}: the extension is one of this server's StructureDefinitions")
    counts = el.get("counts")
    if not isinstance(counts, dict):
        raise ValueError(f"{WHERE}: eligibility.counts must be an object")
    window = el.get("renewal_window_days")
    if not isinstance(window, int) or isinstance(window, bool) or not 0 <= window <= 3650:
        raise ValueError(f"{WHERE}: eligibility.renewal_window_days must be 0-3650")
    reasons = el.get("reasons")
    if not isinstance(reasons, dict) or set(reasons) != REASONS:
        raise ValueError(f"{WHERE}: eligibility.reasons must word exactly {sorted(REASONS)}")
    excluded = el.get("excluded", [])
    if not isinstance(excluded, list):
        raise ValueError(f"{WHERE}: eligibility.excluded must be a list")
    refill = raw.get("refill")
    if not isinstance(refill, dict):
        raise ValueError(f"{WHERE}: refill must be an object")
    renewal = raw.get("renewal")
    if not isinstance(renewal, dict):
        raise ValueError(f"{WHERE}: renewal must be an object")
    refill_rules, renewal_rules = _task(refill, "refill"), _task(renewal, "renewal")
    if refill_rules.code == renewal_rules.code:
        raise ValueError(f"{WHERE}: refill and renewal Tasks need different codes")
    pcm = _coding(renewal.get("pcm_role"), "renewal.pcm_role")
    return MedicationRules(
        extension_url=url,
        reason_system=_str(el.get("reason_system"), "eligibility.reason_system"),
        statuses=_strs(counts.get("statuses"), "eligibility.counts.statuses"),
        intents=_strs(counts.get("intents"), "eligibility.counts.intents"),
        renewal_window_days=window,
        reasons={k: _str(v, f"eligibility.reasons.{k}") for k, v in reasons.items()},
        excluded=tuple(_excluded(x, i) for i, x in enumerate(excluded)),
        refill=refill_rules,
        refill_owners=_strs(
            refill.get("owners"), "refill.owners", frozenset({"Location", "Organization"})
        ),
        renewal=renewal_rules,
        pcm_role=(pcm["system"], pcm["code"]),
    )


@lru_cache(maxsize=4)
def load_table(path: Path = TABLE) -> MedicationRules:
    return parse_table(json.loads(path.read_text()))
