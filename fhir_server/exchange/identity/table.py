"""The matching table (profiles/exchange/matching.json), parsed fail-fast into a frozen
dataclass; the identifier table it weighs with is fhir_server/access/identifiers.py."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from fhir_server.access.identifiers import (
    IdentifierSystem,
    IdentifierTable,
    identifiers,
    need,
)

__all__ = ["IdentifierSystem", "IdentifierTable", "MatchTable", "identifiers", "matching"]

MATCHING = Path(__file__).resolve().parents[3] / "profiles" / "exchange" / "matching.json"
GRADES = ("certain", "probable", "possible")


@dataclass(frozen=True)
class Grade:
    code: str
    min: int


@dataclass(frozen=True)
class MatchTable:
    features: dict[str, dict[str, int]]
    phonetic: str
    grades: tuple[Grade, ...]
    score_scale: int
    required: tuple[tuple[str, ...], ...]
    per_block: int
    blocking: tuple[str, ...]
    default_count: int
    max_count: int
    typo_similarity: float

    def weight(self, feature: str, outcome: str) -> int:
        return self.features.get(feature, {}).get(outcome, 0)

    def grade(self, total: int) -> str | None:
        for g in self.grades:
            if total >= g.min:
                return g.code
        return None

    def score(self, total: int) -> float:
        return round(min(1.0, max(0.0, total / self.score_scale)), 4)


FEATURES = {
    "family": {"exact", "phonetic", "disagree"},
    "given": {"exact", "phonetic", "initial", "disagree"},
    "birthDate": {"exact", "partial", "disagree"},
    "gender": {"agree", "disagree"},
    "address": {"line_and_postal", "postal", "disagree"},
    "telecom": {"agree", "disagree"},
}
PHONETIC = frozenset({"metaphone", "soundex", "nysiis", "match_rating_codex"})
REQUIRABLE = frozenset({"identifier", "name.family", "name.given", "birthDate", "gender"})


def parse_matching(raw: Any) -> MatchTable:
    where = "profiles/exchange/matching.json"
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be an object")
    features = need(raw, "features", dict, where)
    if set(features) != set(FEATURES):
        raise ValueError(f"{where}: 'features' must be exactly {sorted(FEATURES)}")
    parsed: dict[str, dict[str, int]] = {}
    for name, outcomes in features.items():
        if not isinstance(outcomes, dict) or set(outcomes) != FEATURES[name]:
            raise ValueError(f"{where}: feature {name!r} needs {sorted(FEATURES[name])}")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in outcomes.values()):
            raise ValueError(f"{where}: feature {name!r} weights must be integers")
        parsed[name] = dict(outcomes)
    phonetic = need(raw, "phonetic", str, where)
    if phonetic not in PHONETIC:
        raise ValueError(f"{where}: 'phonetic' must be one of {sorted(PHONETIC)}")
    grades = []
    for g in need(raw, "grades", list, where):
        if (
            not isinstance(g, dict)
            or g.get("code") not in GRADES
            or not isinstance(g.get("min"), int)
        ):
            raise ValueError(f"{where}: a grade needs a 'code' of {GRADES} and an integer 'min'")
        grades.append(Grade(g["code"], g["min"]))
    if [g.code for g in grades] != list(GRADES) or any(
        a.min <= b.min for a, b in zip(grades, grades[1:], strict=False)
    ):
        raise ValueError(f"{where}: grades must be certain, probable, possible, 'min' falling")
    required = []
    for group in need(raw, "required", list, where):
        if not isinstance(group, list) or not group or not set(group) <= REQUIRABLE:
            raise ValueError(f"{where}: each 'required' set lists some of {sorted(REQUIRABLE)}")
        required.append(tuple(group))
    blocking = need(raw, "blocking", dict, where)
    by = need(blocking, "by", list, where)
    if not by or not set(by) <= {"identifier", "birthDate"}:
        raise ValueError(f"{where}: 'blocking.by' lists identifier and/or birthDate")
    scale = need(raw, "score_scale", int, where)
    default_count = need(raw, "default_count", int, where)
    max_count = need(raw, "max_count", int, where)
    if scale <= 0 or not 0 < default_count <= max_count:
        raise ValueError(f"{where}: score_scale > 0 and 0 < default_count <= max_count")
    return MatchTable(
        features=parsed,
        phonetic=phonetic,
        grades=tuple(grades),
        score_scale=scale,
        required=tuple(required),
        per_block=need(blocking, "per_block", int, where),
        blocking=tuple(by),
        default_count=default_count,
        max_count=max_count,
        typo_similarity=_similarity(raw.get("typo_similarity"), where),
    )


def _similarity(raw: Any, where: str) -> float:
    if not isinstance(raw, (int, float)) or isinstance(raw, bool) or not 0 < raw <= 1:
        raise ValueError(f"{where}: 'typo_similarity' must be a number in (0, 1]")
    return float(raw)


@lru_cache(maxsize=4)
def matching(path: Path = MATCHING) -> MatchTable:
    return parse_matching(json.loads(path.read_text()))
