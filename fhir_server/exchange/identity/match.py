"""`Patient/$match` (https://hl7.org/fhir/R4/patient-operation-match.html, as IHE PDQm and
the HL7 Identity Matching IG profile it): candidates found by indexed searches (blocking:
the input's identifiers, its birthDate), scored (scoring.py), graded, post-checked.

Candidates are searched under the caller's access policy (`type_filter` ANDed in, as for
any search), scored on the stored resources, and pass the post-check and the read-time
views (an SSN leaves masked) only then: a Patient the caller may not see is never a
candidate, so no score or count tells of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from fhir_server.access.policy import AccessPolicy
from fhir_server.access.screen import screen
from fhir_server.context import ServerContext
from fhir_server.errors import Unprocessable
from fhir_server.exchange.identity import scoring
from fhir_server.exchange.identity.table import IdentifierTable, MatchTable, identifiers, matching
from fhir_server.search.execute import run_search
from fhir_server.search.parse import parse_search

Doc = dict[str, Any]
PATIENT = "Patient"
MATCH_GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"


@dataclass(frozen=True)
class Match:
    resource: Doc
    scored: scoring.Scored
    stored: Doc


def check_input(table: MatchTable, given: Doc) -> None:
    """422 naming what the input lacks (a name alone is not enough to match on)."""
    lacking = scoring.missing(table, given)
    if lacking is not None:
        raise Unprocessable(
            "Patient/$match needs more of the patient to match on: the input Patient lacks "
            + ", or ".join(lacking),
            code="required",
        )


def _blocks(table: MatchTable, ids: IdentifierTable, given: Doc) -> list[list[tuple[str, str]]]:
    """The indexed searches that find the candidates."""
    out: list[list[tuple[str, str]]] = []
    if "identifier" in table.blocking:
        values = []
        for i in given.get("identifier") or ():
            if not isinstance(i, dict) or not isinstance(i.get("value"), str) or not i["value"]:
                continue
            system = ids.of(i.get("system"))
            partial = system is not None and system.masked and len(i["value"]) <= system.keep
            if i.get("system") and not partial:
                values.append(f"{i['system']}|{i['value']}".replace(",", r"\,"))
        if values:
            out.append([("identifier", ",".join(values))])
    birth = given.get("birthDate")
    if "birthDate" in table.blocking and isinstance(birth, str) and birth:
        out.append([("birthdate", birth)])
    return out


async def candidates(
    ctx: ServerContext,
    given: Doc,
    *,
    type_filter: Callable[[str], Doc] | None,
    table: MatchTable | None = None,
) -> list[Match]:
    """Every candidate the blocking searches find (each once), scored, best first; those
    below the lowest grade are dropped. Not yet post-checked or viewed."""
    table = table or matching()
    ids = identifiers()
    seen: dict[str, Match] = {}
    for params in _blocks(table, ids, given):
        req = parse_search(PATIENT, params, ctx.registry, strict=True)
        page = await run_search(
            ctx.store,
            ctx.registry,
            replace(req, count=table.per_block, total="none"),
            type_filter=type_filter,
            max_time_ms=ctx.settings.query_max_time_ms,
        )
        for r in page.resources:
            key = f"{PATIENT}/{r.get('id')}"
            if key in seen:
                continue
            scored = scoring.score(table, ids, given, r)
            if scored.grade is not None:
                seen[key] = Match(r, scored, page.stored_access.get(key, {}))
    return sorted(seen.values(), key=lambda m: (-m.scored.total, str(m.resource.get("id"))))


def admitted(ctx: ServerContext, policy: AccessPolicy, found: list[Match]) -> list[Match]:
    """The post-check (and the read-time views) on each match, as search does."""
    if not policy.restricted:
        return found
    indexer = ctx.store.indexer
    return [m for m in found if screen(policy, indexer, m.resource, where="match", stored=m.stored)]


def select(found: list[Match], *, only_certain: bool, count: int) -> list[Match]:
    """`onlyCertainMatches`: the one certain match, or none when several are certain
    (R4: "the match should not return the results with this flag set to true")."""
    if only_certain:
        certain = [m for m in found if m.scored.grade == "certain"]
        return certain if len(certain) == 1 else []
    return found[:count]


def bundle(base_url: str, found: list[Match]) -> Doc:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(found),
        "entry": [
            {
                "fullUrl": f"{base_url}/{PATIENT}/{m.resource.get('id')}",
                "resource": m.resource,
                "search": {
                    "extension": [{"url": MATCH_GRADE, "valueCode": m.scored.grade}],
                    "mode": "match",
                    "score": m.scored.score,
                },
            }
            for m in found
        ],
    }
