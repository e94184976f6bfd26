"""The access tables compiled once at start-up into what a request's policy is built from.

`profiles/access/family.json` and `clinicians.json` are constant while the server runs, and
so is everything derived from them with the search definitions: the sensitive labels as
index keys (`_security:not=<system>|<code>,...` parsed by the one search parser), the
message parameters that name a patient as sender or recipient, and the directory rule.
Parsing these per request cost about 0.8 ms of CPU for every Patient user's request; built
here once, `build_policy` only looks them up (docs/access.md, "Policies compiled once").
A policy rule stays a search: the criteria are the parser's own, and a patient is put into
the parsed value of a message criterion, never spliced into a query string.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from fhir_server.access import care_team
from fhir_server.access.care_team import ClinicianTable
from fhir_server.access.family import FamilyTable, load_table
from fhir_server.access.rules import DirectoryRule
from fhir_server.search.parse import Criterion, SearchValue, parse_search
from fhir_server.search.query import criterion_filter

# Stands for the patient while a message criterion is compiled (a valid FHIR id).
_PATIENT = "Patient/compiled-placeholder"


@dataclass(frozen=True)
class MessageCriterion:
    """`<code>=<patient>` on one message type, parsed once; the patient is set per use."""

    resource_type: str
    criterion: Criterion

    def keys(self, patient: str) -> tuple[str, ...]:
        c = replace(self.criterion, values=(SearchValue(patient),))
        return tuple(
            filter_keys(criterion_filter(c, resource_type=self.resource_type, elem_match=True))
        )


@dataclass(frozen=True)
class PolicyTables:
    """Everything constant a policy is built from (held by the ServerContext)."""

    registry: Any
    family: FamilyTable
    clinicians: ClinicianTable
    # The sensitive labels as `ix.k` keys (`_security=<system>|<code>`).
    label_keys: tuple[str, ...]
    messages: tuple[MessageCriterion, ...]
    # Directory types every confined token reads (care_team.py).
    directory: DirectoryRule

    def message_keys(self, patient: str) -> tuple[str, ...]:
        """Keys of messages sent by or to `patient` (`sender=<patient>`, `recipient=...`)."""
        return tuple(k for m in self.messages for k in m.keys(patient))


def compile_tables(
    registry: Any,
    family: FamilyTable | None = None,
    clinicians: ClinicianTable | None = None,
) -> PolicyTables:
    """Parse the tables into search criteria and filters; a table the search definitions
    cannot express stops the server here (strict parsing)."""
    family = family or load_table()
    clinicians = clinicians or care_team.load_table()
    placed = frozenset(t for t in clinicians.directory_types if registry.compartment_params(t))
    return PolicyTables(
        registry=registry,
        family=family,
        clinicians=clinicians,
        label_keys=label_keys(registry, family),
        messages=tuple(
            MessageCriterion(
                rt, parse_search(rt, [(code, _PATIENT)], registry, strict=True).criteria[0]
            )
            for rt, params in family.message_params.items()
            for code in params
        ),
        directory=DirectoryRule(clinicians.directory_types, placed),
    )


def filter_keys(filt: Any) -> list[str]:
    """The `ix.k` keys a search filter tests (equality, `$in` or `$nin`)."""
    out: list[str] = []
    if isinstance(filt, dict):
        for k, v in filt.items():
            if k == "ix.k":
                if isinstance(v, str):
                    out.append(v)
                elif isinstance(v, dict):
                    for op in ("$in", "$nin", "$eq"):
                        val = v.get(op)
                        out += [val] if isinstance(val, str) else list(val or [])
            else:
                out += filter_keys(v)
    elif isinstance(filt, list):
        for v in filt:
            out += filter_keys(v)
    return out


def label_keys(registry: Any, table: FamilyTable) -> tuple[str, ...]:
    """The sensitive labels as index keys, by parsing `_security:not=<sys>|<code>,...`
    (a policy rule is a search)."""
    value = ",".join(f"{system}|{code}" for system, code in table.labels)
    req = parse_search(None, [("_security:not", value)], registry, strict=True)
    return tuple(
        filter_keys(criterion_filter(req.criteria[0], resource_type=None, elem_match=True))
    )


def message_keys(registry: Any, table: FamilyTable, patient: str) -> tuple[str, ...]:
    """Keys of messages sent by or to `patient`, parsing the table's parameters afresh
    (what `PolicyTables.message_keys` answers from criteria parsed once)."""
    out: list[str] = []
    for rt, params in table.message_params.items():
        for code in params:
            req = parse_search(rt, [(code, patient)], registry, strict=True)
            c = req.criteria[0]
            out += filter_keys(criterion_filter(c, resource_type=rt, elem_match=True))
    return tuple(out)
