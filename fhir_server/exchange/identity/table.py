"""The identifier and matching tables (profiles/exchange/identifiers.json, matching.json),
parsed fail-fast into frozen dataclasses: a typo stops the server at start-up rather than
opening a leak (an SSN system misspelt would go unmasked)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

PROFILES = Path(__file__).resolve().parents[3] / "profiles" / "exchange"
IDENTIFIERS = PROFILES / "identifiers.json"
MATCHING = PROFILES / "matching.json"
GRADES = ("certain", "probable", "possible")


@dataclass(frozen=True)
class IdentifierSystem:
    key: str
    label: str
    system: str
    aliases: tuple[str, ...]
    unique: bool
    masked: bool
    mask: str
    keep: int
    agree: int
    disagree: int
    last_four_agree: int
    last_four_disagree: int
    pix: bool
    # How the value may appear in free text (a query string), for masked systems.
    shape: re.Pattern[str] | None = None

    @property
    def uris(self) -> tuple[str, ...]:
        return (self.system, *self.aliases)


@dataclass(frozen=True)
class IdentifierTable:
    types: frozenset[str]
    systems: tuple[IdentifierSystem, ...]

    @cached_property
    def by_uri(self) -> dict[str, IdentifierSystem]:
        return {u: s for s in self.systems for u in s.uris}

    @cached_property
    def masked_uris(self) -> frozenset[str]:
        return frozenset(u for s in self.systems if s.masked for u in s.uris)

    @cached_property
    def masked(self) -> tuple[IdentifierSystem, ...]:
        return tuple(s for s in self.systems if s.masked)

    def of(self, uri: Any) -> IdentifierSystem | None:
        return self.by_uri.get(uri) if isinstance(uri, str) else None


def _need(raw: dict[str, Any], name: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = raw.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise ValueError(f"{where}: '{name}' is missing or not a {kind}")
    return value


def parse_identifiers(raw: Any) -> IdentifierTable:
    where = "profiles/exchange/identifiers.json"
    if not isinstance(raw, dict) or not isinstance(raw.get("systems"), list):
        raise ValueError(f"{where} needs a list 'systems'")
    types = raw.get("types")
    if not isinstance(types, list) or not all(isinstance(t, str) and t for t in types):
        raise ValueError(f"{where}: 'types' must list resource types")
    systems: list[IdentifierSystem] = []
    seen: set[str] = set()
    for entry in raw["systems"]:
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: each system is an object: {entry!r}")
        key = _need(entry, "key", str, where)
        at = f"{where} system {key!r}"
        aliases = entry.get("aliases", [])
        if not isinstance(aliases, list) or not all(isinstance(a, str) and a for a in aliases):
            raise ValueError(f"{at}: 'aliases' must be a list of URIs")
        weight = _need(entry, "match_weight", dict, at)
        masked = _need(entry, "masked", bool, at)
        keep = entry.get("keep", 0)
        mask = entry.get("mask", "*")
        if masked and (not isinstance(keep, int) or keep < 0 or not isinstance(mask, str)):
            raise ValueError(f"{at}: a masked system needs 'keep' (digits shown) and 'mask'")
        system = IdentifierSystem(
            key=key,
            label=_need(entry, "label", str, at),
            system=_need(entry, "system", str, at),
            aliases=tuple(aliases),
            unique=_need(entry, "unique", bool, at),
            masked=masked,
            mask=mask if masked else "",
            keep=keep if masked else 0,
            agree=_need(weight, "agree", int, at),
            disagree=_need(weight, "disagree", int, at),
            last_four_agree=int(weight.get("last_four_agree", 0)),
            last_four_disagree=int(weight.get("last_four_disagree", 0)),
            pix=_need(entry, "pix", bool, at),
            shape=_shape(entry.get("shape"), at) if masked else None,
        )
        for uri in (key, *system.uris):
            if uri in seen:
                raise ValueError(f"{where}: {uri!r} is listed twice")
            seen.add(uri)
        systems.append(system)
    return IdentifierTable(frozenset(types), tuple(systems))


def _shape(raw: Any, at: str) -> re.Pattern[str]:
    if not isinstance(raw, str) or not raw:
        raise ValueError(f"{at}: a masked system needs its 'shape' (a regular expression)")
    try:
        return re.compile(raw)
    except re.error as exc:
        raise ValueError(f"{at}: 'shape' is not a regular expression: {exc}") from None


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
    features = _need(raw, "features", dict, where)
    if set(features) != set(FEATURES):
        raise ValueError(f"{where}: 'features' must be exactly {sorted(FEATURES)}")
    parsed: dict[str, dict[str, int]] = {}
    for name, outcomes in features.items():
        if not isinstance(outcomes, dict) or set(outcomes) != FEATURES[name]:
            raise ValueError(f"{where}: feature {name!r} needs {sorted(FEATURES[name])}")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in outcomes.values()):
            raise ValueError(f"{where}: feature {name!r} weights must be integers")
        parsed[name] = dict(outcomes)
    phonetic = _need(raw, "phonetic", str, where)
    if phonetic not in PHONETIC:
        raise ValueError(f"{where}: 'phonetic' must be one of {sorted(PHONETIC)}")
    grades = []
    for g in _need(raw, "grades", list, where):
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
    for group in _need(raw, "required", list, where):
        if not isinstance(group, list) or not group or not set(group) <= REQUIRABLE:
            raise ValueError(f"{where}: each 'required' set lists some of {sorted(REQUIRABLE)}")
        required.append(tuple(group))
    blocking = _need(raw, "blocking", dict, where)
    by = _need(blocking, "by", list, where)
    if not by or not set(by) <= {"identifier", "birthDate"}:
        raise ValueError(f"{where}: 'blocking.by' lists identifier and/or birthDate")
    scale = _need(raw, "score_scale", int, where)
    default_count = _need(raw, "default_count", int, where)
    max_count = _need(raw, "max_count", int, where)
    if scale <= 0 or not 0 < default_count <= max_count:
        raise ValueError(f"{where}: score_scale > 0 and 0 < default_count <= max_count")
    return MatchTable(
        features=parsed,
        phonetic=phonetic,
        grades=tuple(grades),
        score_scale=scale,
        required=tuple(required),
        per_block=_need(blocking, "per_block", int, where),
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
def identifiers(path: Path = IDENTIFIERS) -> IdentifierTable:
    return parse_identifiers(json.loads(path.read_text()))


@lru_cache(maxsize=4)
def matching(path: Path = MATCHING) -> MatchTable:
    return parse_matching(json.loads(path.read_text()))
