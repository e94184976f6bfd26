"""Scoring one candidate Patient against a `$match` input: pure functions over the two
resources and the tables (profiles/exchange/matching.json, identifiers.json).

A Fellegi-Sunter-style sum: each feature both resources carry adds its agreement weight
or its (negative) disagreement weight; a feature either lacks adds nothing. The HL7
Identity Matching IG grades the sum (certain / probable / possible): table.py `grade`.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

import jellyfish

from fhir_server.exchange.identity.table import IdentifierTable, MatchTable

Doc = dict[str, Any]


@dataclass(frozen=True)
class Scored:
    total: int
    grade: str | None
    score: float
    # feature -> outcome, for the docs and the tests ("family": "phonetic"...).
    outcomes: tuple[tuple[str, str], ...]


def fold(text: str) -> str:
    """Accent- and case-insensitive form: `Peña` and `PENA` agree."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if c.isalnum()).casefold()


def _phonetic(table: MatchTable, word: str) -> str:
    code: str = getattr(jellyfish, table.phonetic)(word)
    return code


def _names(resource: Doc) -> tuple[list[str], list[str]]:
    families: list[str] = []
    givens: list[str] = []
    for name in resource.get("name") or ():
        if not isinstance(name, dict):
            continue
        family, given = name.get("family"), name.get("given")
        if isinstance(family, str) and fold(family):
            # A compound family name agrees with any of its words too ("Peña Torres").
            families += dict.fromkeys([fold(family), *(fold(w) for w in family.split())])
        givens += [fold(g) for g in given or () if isinstance(g, str) and fold(g)]
        if family is None and given is None and isinstance(name.get("text"), str):
            # A name as one text (an account's): each word may be a given or family name.
            words = [fold(w) for w in name["text"].split() if fold(w)]
            families += words
            givens += words
    return [f for f in families if f], givens


def _words_outcome(table: MatchTable, mine: list[str], theirs: list[str]) -> str | None:
    """exact | phonetic | initial | disagree, or None when either side has no word."""
    if not mine or not theirs:
        return None
    if set(mine) & set(theirs):
        return "exact"
    codes = {_phonetic(table, w) for w in theirs}
    for w in mine:
        if _phonetic(table, w) in codes:
            return "phonetic"
        if any(jellyfish.jaro_winkler_similarity(w, t) >= table.typo_similarity for t in theirs):
            return "phonetic"
    if any(len(w) == 1 or len(t) == 1 for w in mine for t in theirs) and {w[0] for w in mine} & {
        t[0] for t in theirs
    }:
        return "initial"
    return "disagree"


def _birth_outcome(mine: Any, theirs: Any) -> str | None:
    if not isinstance(mine, str) or not isinstance(theirs, str) or not mine or not theirs:
        return None
    if mine == theirs:
        return "exact"
    a, b = mine.split("-"), theirs.split("-")
    if (
        len(a) == 3
        and len(b) == 3
        and a[0] == b[0]
        and (a[1] == b[1] or (a[1], a[2]) == (b[2], b[1]))
    ):
        return "partial"
    return "disagree"


def _address_outcome(mine: Doc, theirs: Doc) -> str | None:
    def parts(r: Doc) -> list[tuple[str, str]]:
        out = []
        for a in r.get("address") or ():
            if isinstance(a, dict) and isinstance(a.get("postalCode"), str):
                line = " ".join(x for x in a.get("line") or () if isinstance(x, str))
                out.append((fold(a["postalCode"])[:5], fold(line)))
        return out

    pa, pb = parts(mine), parts(theirs)
    if not pa or not pb:
        return None
    if any(p == q and line and line == other for p, line in pa for q, other in pb):
        return "line_and_postal"
    if {p for p, _ in pa} & {q for q, _ in pb}:
        return "postal"
    return "disagree"


def _telecom_outcome(mine: Doc, theirs: Doc) -> str | None:
    def values(r: Doc) -> set[str]:
        return {
            fold(t["value"])
            for t in r.get("telecom") or ()
            if isinstance(t, dict) and isinstance(t.get("value"), str) and fold(t["value"])
        }

    a, b = values(mine), values(theirs)
    if not a or not b:
        return None
    return "agree" if a & b else "disagree"


def _identifier_weights(ids: IdentifierTable, mine: Doc, theirs: Doc) -> list[tuple[str, str, int]]:
    """(system key, outcome, weight) per table system both carry: one agreement (any value
    equal) or one disagreement per system. An input value of a masked system as long as
    its `keep` (the last four of an SSN) is compared with the candidate's last four."""

    def by_key(r: Doc) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for i in r.get("identifier") or ():
            if isinstance(i, dict) and isinstance(i.get("value"), str):
                s = ids.of(i.get("system"))
                if s is not None:
                    out.setdefault(s.key, set()).add(fold(i["value"]))
        return out

    a, b = by_key(mine), by_key(theirs)
    out: list[tuple[str, str, int]] = []
    for system in ids.systems:
        if system.key not in a or system.key not in b:
            continue
        given, held = a[system.key], b[system.key]
        partial = {v for v in given if system.masked and system.keep and len(v) == system.keep}
        whole = given - partial
        if whole & held:
            out.append((system.key, "agree", system.agree))
        elif partial and any(h[-system.keep :] in partial for h in held):
            out.append((system.key, "last_four_agree", system.last_four_agree))
        elif whole:
            out.append((system.key, "disagree", system.disagree))
        else:
            out.append((system.key, "last_four_disagree", system.last_four_disagree))
    return out


def score(table: MatchTable, ids: IdentifierTable, given: Doc, candidate: Doc) -> Scored:
    """The candidate's sum, grade and search.score against the input."""
    outcomes: list[tuple[str, str]] = []
    total = 0
    for key, outcome, weight in _identifier_weights(ids, given, candidate):
        outcomes.append((f"identifier:{key}", outcome))
        total += weight
    fam_a, giv_a = _names(given)
    fam_b, giv_b = _names(candidate)
    features: list[tuple[str, str | None]] = [
        ("family", _words_outcome(table, fam_a, fam_b)),
        ("given", _words_outcome(table, giv_a, giv_b)),
        ("birthDate", _birth_outcome(given.get("birthDate"), candidate.get("birthDate"))),
        ("gender", _gender_outcome(given.get("gender"), candidate.get("gender"))),
        ("address", _address_outcome(given, candidate)),
        ("telecom", _telecom_outcome(given, candidate)),
    ]
    for feature, found in features:
        if found is None:
            continue
        # An initial says nothing of a family name: it disagrees.
        outcome = "disagree" if feature == "family" and found == "initial" else found
        outcomes.append((feature, outcome))
        total += table.weight(feature, outcome)
    return Scored(total, table.grade(total), table.score(total), tuple(outcomes))


def _gender_outcome(mine: Any, theirs: Any) -> str | None:
    known = ("male", "female", "other")
    if mine not in known or theirs not in known:
        return None
    return "agree" if mine == theirs else "disagree"


def missing(table: MatchTable, given: Doc) -> list[str] | None:
    """None when the input carries one of the table's `required` sets; else each set's
    missing elements, for the 422."""
    have: set[str] = set()
    if any(
        isinstance(i, dict) and i.get("system") and isinstance(i.get("value"), str) and i["value"]
        for i in given.get("identifier") or ()
    ):
        have.add("identifier")
    fam, giv = _names(given)
    if fam:
        have.add("name.family")
    if giv:
        have.add("name.given")
    if isinstance(given.get("birthDate"), str) and given["birthDate"]:
        have.add("birthDate")
    if given.get("gender") in ("male", "female", "other", "unknown"):
        have.add("gender")
    if any(set(group) <= have for group in table.required):
        return None
    return [" and ".join(e for e in group if e not in have) for group in table.required]
