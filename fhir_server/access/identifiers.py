"""The identifier table (profiles/exchange/identifiers.json), parsed fail-fast into frozen
dataclasses: a typo stops the server at start-up rather than opening a leak (an SSN system
misspelt would go unmasked). Below rest/ and search/ (the index and the masking read it);
the identity features are in fhir_server/exchange/identity/."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

IDENTIFIERS = Path(__file__).resolve().parents[2] / "profiles" / "exchange" / "identifiers.json"


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


def need(raw: dict[str, Any], name: str, kind: type | tuple[type, ...], where: str) -> Any:
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
        key = need(entry, "key", str, where)
        at = f"{where} system {key!r}"
        aliases = entry.get("aliases", [])
        if not isinstance(aliases, list) or not all(isinstance(a, str) and a for a in aliases):
            raise ValueError(f"{at}: 'aliases' must be a list of URIs")
        weight = need(entry, "match_weight", dict, at)
        masked = need(entry, "masked", bool, at)
        keep = entry.get("keep", 0)
        mask = entry.get("mask", "*")
        if masked and (not isinstance(keep, int) or keep < 0 or not isinstance(mask, str)):
            raise ValueError(f"{at}: a masked system needs 'keep' (digits shown) and 'mask'")
        system = IdentifierSystem(
            key=key,
            label=need(entry, "label", str, at),
            system=need(entry, "system", str, at),
            aliases=tuple(aliases),
            unique=need(entry, "unique", bool, at),
            masked=masked,
            mask=mask if masked else "",
            keep=keep if masked else 0,
            agree=need(weight, "agree", int, at),
            disagree=need(weight, "disagree", int, at),
            last_four_agree=int(weight.get("last_four_agree", 0)),
            last_four_disagree=int(weight.get("last_four_disagree", 0)),
            pix=need(entry, "pix", bool, at),
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


@lru_cache(maxsize=4)
def identifiers(path: Path = IDENTIFIERS) -> IdentifierTable:
    return parse_identifiers(json.loads(path.read_text()))
