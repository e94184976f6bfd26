"""Value-set expansion and code-system subsumption for token `:in`, `:not-in`, `:above` and
`:below` (https://hl7.org/fhir/R4/search.html#token), without a terminology server.

Two sources, in this order:

- ValueSet resources stored in this server, found by canonical `url` (optionally
  `url|version`) or as a relative reference `ValueSet/<id>`; their `expansion.contains` when
  present, else their `compose`;
- the FHIR R4 value sets and code systems vendored in `fhir_server/data/terminology/` (HL7's
  `hl7.fhir.r4.examples@4.0.1`, CC0; see its README).

`compose` is expanded here for what needs no terminology server: `include.concept` lists,
`include.valueSet` (recursively, at most `MAX_DEPTH` deep and `MAX_VALUE_SETS` value sets,
cycles refused), whole code systems
that are vendored complete, `is-a` / `descendent-of` / `is-not-a` filters on those, and
`exclude` of the same. Anything else (other filters, a whole external system such as SNOMED CT
or LOINC) answers 400 `not-supported`; an unknown value set 400 `not-found`. An expansion of
more than `MAX_CODES` codes answers 503 `too-costly`, since it becomes one `$in` operand.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from fhir_server.errors import BadRequest, NotSupported, TooCostly

MAX_CODES = 1000  # codes in one expansion: the `$in` of the query
MAX_DEPTH = 5  # nested compose.include.valueSet
MAX_VALUE_SETS = 50  # value sets read for one search (each may be a database query)
MAX_STORED = 20  # stored ValueSets read for one canonical url (versions)
SUBSUMPTION_FILTERS = ("is-a", "descendent-of", "is-not-a")
_LOCAL_VS = re.compile(r"^ValueSet/([A-Za-z0-9\-.]{1,64})$")

Code = tuple[str, str]  # (system, code); system "" when the concept has none
Find = Callable[..., Awaitable[list[dict[str, Any]]]]
Scope = Callable[[str | None, dict[str, Any]], dict[str, Any]]
Lookup = Callable[[str], Awaitable[dict[str, Any] | None]]


@dataclass
class CodeSystem:
    """A vendored complete code system: its codes and their parents (concept nesting)."""

    url: str
    parents: dict[str, tuple[str, ...]]
    subsumption: bool = True  # hierarchyMeaning is-a (or unstated)
    _children: dict[str, list[str]] | None = field(default=None, repr=False)

    def children(self) -> dict[str, list[str]]:
        if self._children is None:
            kids: dict[str, list[str]] = {}
            for c, ps in self.parents.items():
                for p in ps:
                    kids.setdefault(p, []).append(c)
            self._children = kids
        return self._children

    def descendants(self, code: str) -> set[str]:
        """`code` and every code below it."""
        out, todo = {code}, [code]
        kids = self.children()
        while todo:
            for k in kids.get(todo.pop(), ()):
                if k not in out:
                    out.add(k)
                    todo.append(k)
        return out

    def ancestors(self, code: str) -> set[str]:
        """`code` and every code above it."""
        out, todo = {code}, [code]
        while todo:
            for p in self.parents.get(todo.pop(), ()):
                if p not in out:
                    out.add(p)
                    todo.append(p)
        return out


@dataclass
class Terminology:
    code_systems: dict[str, CodeSystem]
    value_sets: dict[str, dict[str, Any]]  # url -> reduced ValueSet (compose only)
    unsupported: dict[str, str]  # url -> why the vendored value set cannot be expanded (400)

    @staticmethod
    def from_json(data: dict[str, Any]) -> Terminology:
        return Terminology(
            code_systems={
                url: CodeSystem(url, {c: tuple(ps) for c, ps in cs["c"].items()}, cs.get("h", True))
                for url, cs in data["codesystems"].items()
            },
            value_sets=data["valuesets"],
            unsupported=data.get("unsupported", {}),
        )


@cache
def vendored() -> Terminology:
    path = resources.files("fhir_server") / "data" / "terminology" / "terminology.json.gz"
    return Terminology.from_json(json.loads(gzip.decompress(path.read_bytes())))


def _strip_version(canonical: str) -> tuple[str, str | None]:
    url, bar, version = canonical.partition("|")
    return url, (version if bar else None)


class Expander:
    """Expands value sets; `lookup(canonical)` finds a stored ValueSet (None if there is none)."""

    def __init__(
        self,
        lookup: Lookup,
        terminology: Terminology | None = None,
    ) -> None:
        self.lookup = lookup
        self.term = terminology if terminology is not None else vendored()
        self.lookups = 0

    async def expand(self, canonical: str, stack: tuple[str, ...] = ()) -> set[Code]:
        if canonical in stack:
            raise BadRequest(f"Value set {canonical!r} includes itself", code="processing")
        if len(stack) > MAX_DEPTH:
            raise NotSupported(
                f"Value set {stack[0]!r} nests included value sets deeper than {MAX_DEPTH}"
            )
        self.lookups += 1
        if self.lookups > MAX_VALUE_SETS:
            first = (stack or (canonical,))[0]
            raise TooCostly(f"Expanding {first!r} reads more than {MAX_VALUE_SETS} value sets")
        vs = await self.lookup(canonical)
        if vs is None:
            url, _ = _strip_version(canonical)
            vs = self.term.value_sets.get(url)
            if vs is None:
                why = self.term.unsupported.get(url)
                if why:
                    raise NotSupported(why)
                raise BadRequest(f"Unknown value set {canonical!r}", code="not-found")
        return await self.expand_resource(vs, stack + (canonical,))

    async def expand_resource(self, vs: dict[str, Any], stack: tuple[str, ...]) -> set[Code]:
        name = stack[-1] if stack else vs.get("url", "?")
        expansion = vs.get("expansion")
        if isinstance(expansion, dict) and "contains" in expansion:
            codes = set(_contains(expansion.get("contains", ())))
            total = expansion.get("total")
            if isinstance(total, int) and total > len(codes):
                raise NotSupported(f"Value set {name!r} carries a partial expansion")
            return _bounded(codes, name)
        compose = vs.get("compose")
        if not isinstance(compose, dict) or not compose.get("include"):
            raise NotSupported(f"Value set {name!r} has neither an expansion nor a compose")
        out: set[Code] = set()
        for inc in compose["include"]:
            out |= await self._item(inc, stack, name)
        for exc in compose.get("exclude", ()):
            out -= await self._item(exc, stack, name)
        return _bounded(out, name)

    async def _item(self, item: Any, stack: tuple[str, ...], name: str) -> set[Code]:
        """One compose.include/exclude: its system part and its valueSet parts intersected
        (https://hl7.org/fhir/R4/valueset-definitions.html#ValueSet.compose.include)."""
        if not isinstance(item, dict):
            raise BadRequest(f"Value set {name!r} has a malformed compose entry")
        sets: list[set[Code]] = []
        system = item.get("system")
        if isinstance(system, str) and system:
            sets.append(self._system_part(system, item, name))
        elif item.get("concept") or item.get("filter"):
            raise BadRequest(f"Value set {name!r} lists concepts without a system")
        for ref in item.get("valueSet", ()):
            sets.append(await self.expand(str(ref), stack))
        if not sets:
            return set()
        result = sets[0]
        for s in sets[1:]:
            result = result & s
        return result

    def _system_part(self, system: str, item: dict[str, Any], name: str) -> set[Code]:
        concepts = item.get("concept")
        filters = item.get("filter")
        if concepts:
            return {
                (system, str(c["code"])) for c in concepts if isinstance(c, dict) and "code" in c
            }
        cs = self.term.code_systems.get(system)
        if cs is None:
            what = "filters" if filters else "includes all of"
            raise NotSupported(
                f"Value set {name!r} {what} code system {system!r}, which this server cannot "
                "enumerate without a terminology server"
            )
        codes = set(cs.parents)
        for f in filters or ():
            codes &= _filter(cs, f, name)
        return {(system, c) for c in codes}


def _filter(cs: CodeSystem, f: Any, name: str) -> set[str]:
    prop, op, value = (
        (f.get(k) for k in ("property", "op", "value")) if isinstance(f, dict) else (None,) * 3
    )
    if prop != "concept" or op not in SUBSUMPTION_FILTERS or not isinstance(value, str):
        raise NotSupported(
            f"Value set {name!r} uses the filter {prop} {op} {value!r} on {cs.url!r}; only "
            f"concept {', '.join(SUBSUMPTION_FILTERS)} can be expanded here"
        )
    if not cs.subsumption:
        raise NotSupported(f"Code system {cs.url!r} has no subsumption hierarchy")
    below = cs.descendants(value) if value in cs.parents else set()
    if op == "is-a":
        return below
    if op == "descendent-of":
        return below - {value}
    return set(cs.parents) - below  # is-not-a


def _contains(items: Iterable[Any]) -> Iterable[Code]:
    for c in items:
        if not isinstance(c, dict):
            continue
        if c.get("code") is not None and not c.get("abstract"):
            yield (str(c.get("system") or ""), str(c["code"]))
        yield from _contains(c.get("contains", ()))


def _bounded(codes: set[Code], name: str) -> set[Code]:
    if len(codes) > MAX_CODES:
        raise TooCostly(
            f"Value set {name!r} expands to {len(codes)} codes, more than the {MAX_CODES} "
            "this server searches for at once"
        )
    return codes


def subsumed(system: str, code: str, direction: str) -> set[Code]:
    """Codes of a vendored code system at or below (`below`) or at or above (`above`) `code`
    (https://hl7.org/fhir/R4/search.html#token, `:above`/`:below`)."""
    cs = vendored().code_systems.get(system)
    if cs is None:
        raise NotSupported(
            f":{direction} needs the hierarchy of code system {system!r}, which this server "
            "does not hold"
        )
    if not cs.subsumption:
        raise NotSupported(f"Code system {system!r} has no subsumption hierarchy")
    if code not in cs.parents:
        return {(system, code)}
    found = cs.descendants(code) if direction == "below" else cs.ancestors(code)
    return _bounded({(system, c) for c in found}, f"{system}|{code}")


def stored_lookup(find: Find, scope: Scope) -> Lookup:
    """A `lookup` over the `resources` collection: `find(filter, projection, limit=n)` is the
    search runner's (time-limited) find, `scope(type, filter)` its access-policy narrowing."""

    async def lookup(canonical: str) -> dict[str, Any] | None:
        m = _LOCAL_VS.match(canonical)
        if m:
            filt: dict[str, Any] = {"_id": f"ValueSet/{m.group(1)}"}
            version = None
        else:
            url, version = _strip_version(canonical)
            filt = {"rt": "ValueSet", "ix.k": f"url={url}"}
        docs = await find(scope("ValueSet", filt), {"res": 1, "lu": 1}, limit=MAX_STORED)
        if version is not None:
            docs = [d for d in docs if d["res"].get("version") == version]
        if not docs:
            return None
        # Several versions stored under one url and none asked for: the latest written.
        res: dict[str, Any] = max(docs, key=lambda d: str(d.get("lu", "")))["res"]
        return res

    return lookup
