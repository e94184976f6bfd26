"""Search parameter registry built from the official R4 definitions.

The 1375 SearchParameters of FHIR R4 4.0.1 and the patient CompartmentDefinition are vendored
in `fhir_server/data/search/` (see its README for their origin). Custom SearchParameter
resources add to or override them (https://hl7.org/fhir/R4/searchparameter.html).
No code here or elsewhere in the search engine is written per resource type.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from fhir_server.errors import BadRequest
from fhir_server.search.paths import Evaluator, Node, compile_for_type, compile_relative

PARAM_TYPES = ("number", "date", "string", "token", "reference", "composite", "quantity", "uri")
PATIENT_COMPARTMENT_URL = "http://hl7.org/fhir/CompartmentDefinition/patient"


@dataclass(frozen=True)
class Component:
    """One part of a composite parameter: the component's own definition and its path."""

    definition: str
    expression: str


@dataclass(frozen=True)
class SearchParam:
    """One SearchParameter, reduced to what search needs."""

    code: str
    base: tuple[str, ...]
    type: str
    expression: str = ""
    url: str = ""
    target: tuple[str, ...] = ()
    modifiers: tuple[str, ...] = ()
    comparators: tuple[str, ...] = ()
    components: tuple[Component, ...] = ()
    # Shown as the CapabilityStatement's searchParam.documentation.
    description: str = ""

    @staticmethod
    def from_resource(sp: dict[str, Any]) -> SearchParam:
        try:
            return SearchParam(
                code=sp["code"],
                base=tuple(sp["base"]),
                type=sp["type"],
                expression=sp.get("expression", "") or "",
                url=sp.get("url", ""),
                description=sp.get("description", "") or "",
                target=tuple(sp.get("target", ())),
                modifiers=tuple(sp.get("modifier", ())),
                comparators=tuple(sp.get("comparator", ())),
                components=tuple(
                    Component(c["definition"], c["expression"]) for c in sp.get("component", ())
                ),
            )
        except (KeyError, TypeError) as e:
            raise BadRequest(f"SearchParameter lacks a required element: {e}") from e


@dataclass
class _Compiled:
    """Per resource type: the parameters with their evaluators, compiled once."""

    params: dict[str, SearchParam] = field(default_factory=dict)
    evaluators: dict[str, Evaluator] = field(default_factory=dict)


class Registry:
    """All search parameters by resource type, plus the patient compartment definition."""

    def __init__(self, params: list[dict[str, Any]], compartment: dict[str, list[str]]) -> None:
        self._by_url: dict[str, SearchParam] = {}
        self._by_type: dict[str, dict[str, SearchParam]] = {}
        self._compiled: dict[str, _Compiled] = {}
        self._components: dict[tuple[str, int], Any] = {}
        self._lock = threading.Lock()
        self.patient_compartment: dict[str, tuple[str, ...]] = {
            t: tuple(ps) for t, ps in compartment.items()
        }
        for sp in params:
            self._put(SearchParam.from_resource(sp))

    @classmethod
    def load_default(cls) -> Registry:
        """The registry of the vendored R4 definitions (a fresh copy: `add` may change it)."""
        params, comp = _vendored()
        return cls(params, comp)

    def _put(self, p: SearchParam) -> None:
        if p.type not in PARAM_TYPES and p.type != "special":
            raise BadRequest(f"SearchParameter.type {p.type!r} is not an R4 search type")
        old = self._by_url.get(p.url) if p.url else None
        if old is not None:
            for b in old.base:
                self._by_type.get(b, {}).pop(old.code, None)
        if p.url:
            self._by_url[p.url] = p
        for b in p.base:
            self._by_type.setdefault(b, {})[p.code] = p
        self._compiled.clear()

    def add(self, search_parameter_resource: dict[str, Any]) -> SearchParam:
        """Add or override (same url, or same base and code) a custom SearchParameter."""
        p = SearchParam.from_resource(search_parameter_resource)
        with self._lock:
            self._put(p)
        return p

    @property
    def resource_types(self) -> tuple[str, ...]:
        return tuple(t for t in self._by_type if t not in ("Resource", "DomainResource"))

    def params_for(self, resource_type: str) -> dict[str, SearchParam]:
        """Parameters that apply to `resource_type`, including Resource/DomainResource ones."""
        return self._compile(resource_type).params

    def get(self, resource_type: str, code: str) -> SearchParam | None:
        return self.params_for(resource_type).get(code)

    def by_url(self, url: str) -> SearchParam | None:
        return self._by_url.get(url)

    def evaluators(self, resource_type: str) -> dict[str, Evaluator]:
        """Compiled evaluators of every parameter with an expression for this type."""
        return self._compile(resource_type).evaluators

    def component_evaluator(self, param: SearchParam, index: int) -> Any:
        key = (param.url or param.code, index)
        ev = self._components.get(key)
        if ev is None:
            ev = compile_relative(param.components[index].expression)
            self._components[key] = ev
        return ev

    def _compile(self, resource_type: str) -> _Compiled:
        c = self._compiled.get(resource_type)
        if c is not None:
            return c
        with self._lock:
            c = _Compiled()
            for base in ("Resource", "DomainResource", resource_type):
                c.params.update(self._by_type.get(base, {}))
            for code, p in c.params.items():
                if p.expression and p.type != "special":
                    ev = compile_for_type(p.expression, resource_type)
                    if ev is not None:
                        c.evaluators[code] = ev
            self._compiled[resource_type] = c
            return c

    def compartment_params(self, resource_type: str) -> tuple[str, ...]:
        """Params of `resource_type` that put it in a Patient's compartment
        (https://hl7.org/fhir/R4/compartmentdefinition-patient.html)."""
        return self.patient_compartment.get(resource_type, ())


_IDENTIFIER_PATH = re.compile(r"[iI]dentifier\b")


def is_identifier_param(p: SearchParam) -> bool:
    """A token parameter on an Identifier element (`Patient.identifier`,
    `Specimen.accessionIdentifier`, `... as Identifier`): the ones `:of-type` applies to
    (https://hl7.org/fhir/R4/search.html#token). All 86 such R4 parameters name the element
    `identifier` or `*Identifier`, so the path says it without the StructureDefinitions."""
    return p.type == "token" and bool(_IDENTIFIER_PATH.search(p.expression))


def evaluate(registry: Registry, resource: dict[str, Any], code: str) -> list[Node]:
    ev = registry.evaluators(resource.get("resourceType", "")).get(code)
    return ev(resource) if ev else []


@cache
def _vendored() -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    base = resources.files("fhir_server") / "data" / "search"
    params = json.loads((base / "search-parameters.json").read_text())
    comp = json.loads((base / "compartment-patient.json").read_text())["resource"]
    return params, comp


@cache
def summary_elements() -> dict[str, dict[str, list[str]]]:
    """Top-level `isSummary` and mandatory elements per type (for `_summary`)."""
    base = resources.files("fhir_server") / "data" / "search"
    data: dict[str, dict[str, list[str]]] = json.loads((base / "summary-elements.json").read_text())
    return data
