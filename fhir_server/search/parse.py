"""Search parameters -> a typed `SearchRequest` (https://hl7.org/fhir/R4/search.html).

One parser for HTTP search, conditional interactions, access-policy rules and SMART
query-qualified scopes: all of them are a `SearchRequest`, combined with `and_`.

Strictness follows `Prefer: handling` (https://hl7.org/fhir/R4/search.html#errors): strict
raises `BadRequest`/`NotSupported`; lenient drops the parameter and records it in
`SearchRequest.dropped`, and `SearchRequest.used` (what the self link shows) leaves it out.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from fhir_server.errors import BadRequest, FhirError, NotSupported
from fhir_server.search.extract import NO_WORD_KEYS, STRING_KEY_MAX
from fhir_server.search.registry import Registry, SearchParam, is_identifier_param
from fhir_server.search.values import WORD_MIN, date_range, norm, parse_decimal, words
from fhir_server.search.valuesets import subsumed

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
ORDERED = ("date", "number", "quantity")
DEFAULT_COUNT = 50
MAX_COUNT = 1000
MAX_CHAIN_DEPTH = 3
SUMMARY = ("true", "false", "text", "data", "count")
TOTAL = ("none", "estimate", "accurate")
# Clients' own spellings of `_total` (docs/search.md, "Client habits"): fhirpy's count()
# sends Aidbox's `_totalMethod=count`, which a strict search would refuse as unknown.
TOTAL_ALIASES = {"_totalMethod": {"count": "accurate", "estimate": "estimate", "none": "none"}}
IGNORED = ("_format", "_pretty")  # rendering options, handled by the REST layer
UNSUPPORTED = ("_query", "_filter", "_list", "_contained", "_containedType")
# Full-text parameters (type string without an expression in R4; their meaning is the
# server's), served by word keys (docs/search.md).
FULL_TEXT = ("_text", "_content")
MAX_QUERY_WORDS = 20
# What `_text` / `_content` mean here (R4 leaves it to the server), for the CapabilityStatement.
FULL_TEXT_DOC = {
    "_text": "Whole words of the narrative (text.div), case- and accent-insensitive; every "
    "word of a value must occur; comma-separated values are OR-ed (docs/search.md)",
    "_content": "Whole words of the resource's string values (not ids, references, systems, "
    "urls, binary data or the narrative), case- and accent-insensitive; every word of a "
    "value must occur; comma-separated values are OR-ed (docs/search.md)",
}
MODIFIERS = {
    "string": ("exact", "contains", "missing"),
    "token": ("text", "not", "missing", "of-type", "in", "not-in", "above", "below"),
    "reference": ("identifier", "missing"),
    "uri": ("above", "below", "missing"),
    "date": ("missing",),
    "number": ("missing",),
    "quantity": ("missing",),
    "composite": ("missing",),
}


@dataclass(frozen=True)
class SearchValue:
    """One OR-ed value. `value` keeps FHIR escapes (`\\|`, `\\$`, `\\\\`) for later splitting."""

    value: str
    prefix: str = ""


@dataclass(frozen=True)
class Criterion:
    """One parameter (a conjunct). `values` are OR-ed (https://hl7.org/fhir/R4/search.html#combining)."""

    name: str
    code: str
    type: str
    values: tuple[SearchValue, ...] = ()
    modifier: str | None = None
    target_types: tuple[str, ...] = ()
    # Chained search: the criterion to apply on each target type
    # (https://hl7.org/fhir/R4/search.html#chaining).
    chain: tuple[tuple[str, Criterion], ...] = ()
    has: Has | None = None
    param: SearchParam | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Has:
    """Reverse chaining `_has:Type:param:criterion` (https://hl7.org/fhir/R4/search.html#has)."""

    source_type: str
    ref_code: str
    inner: Criterion


@dataclass(frozen=True)
class Include:
    """`_include` / `_revinclude` (https://hl7.org/fhir/R4/search.html#include)."""

    source_type: str
    code: str  # "*" for all reference parameters
    target_type: str | None = None
    iterate: bool = False


@dataclass(frozen=True)
class SortKey:
    code: str
    descending: bool = False


@dataclass(frozen=True)
class SearchRequest:
    resource_type: str | None
    criteria: tuple[Criterion, ...] = ()
    types: tuple[str, ...] = ()  # `_type` of a system-level search
    includes: tuple[Include, ...] = ()
    revincludes: tuple[Include, ...] = ()
    sort: tuple[SortKey, ...] = ()
    count: int = DEFAULT_COUNT
    summary: str | None = None
    elements: tuple[str, ...] = ()
    total: str | None = None
    cursor: str | None = None
    used: tuple[tuple[str, str], ...] = ()  # parameters as applied, for the self link
    dropped: tuple[tuple[str, str, str], ...] = ()  # (name, value, why) ignored under lenient

    def and_(self, other: SearchRequest) -> SearchRequest:
        """Conjunction, for access-policy and scope filters: `other`'s criteria are added,
        everything else (paging, includes, the self link) stays this request's."""
        if other.resource_type not in (None, self.resource_type):
            raise BadRequest(
                f"Cannot combine a {other.resource_type} filter with a "
                f"{self.resource_type or 'system-level'} search"
            )
        types = self.types
        if other.types:
            types = tuple(t for t in (types or other.types) if t in other.types)
        return replace(self, criteria=self.criteria + other.criteria, types=types)


def split_escaped(text: str, sep: str) -> list[str]:
    """Split on `sep` not preceded by a backslash; escapes are kept."""
    out, cur, i = [], [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            cur.append(text[i : i + 2])
            i += 2
            continue
        if ch == sep:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    out.append("".join(cur))
    return out


def unescape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


class _Parser:
    def __init__(self, rt: str | None, registry: Registry) -> None:
        self.rt = rt
        self.reg = registry

    def lookup(self, rt: str | None, code: str, types: tuple[str, ...] = ()) -> SearchParam:
        if rt is not None:
            if rt not in self.reg.resource_types:
                raise BadRequest(f"Unknown resource type {rt!r}")
            p = self.reg.get(rt, code)
        elif types:
            found = [self.reg.get(t, code) for t in types]
            p = found[0] if all(found) else None
        else:
            p = self.reg.params_for("Resource").get(code)
        if p is None:
            where = rt or (",".join(types) if types else "a system-level search")
            raise BadRequest(f"Unknown search parameter {code!r} for {where}")
        return p

    def values(self, p: SearchParam, raw: str, modifier: str | None) -> tuple[SearchValue, ...]:
        if raw == "":
            raise BadRequest(f"Search parameter {p.code!r} has an empty value")
        out = []
        for v in split_escaped(raw, ","):
            if v == "":
                raise BadRequest(f"Search parameter {p.code!r} has an empty value in {raw!r}")
            if modifier == "missing":
                if v not in ("true", "false"):
                    raise BadRequest(f":missing takes true or false, not {v!r}")
                out.append(SearchValue(v))
                continue
            prefix = ""
            t = p.type
            if t in ORDERED:
                prefix = "eq"
                if v[:2] in PREFIXES and not v[:2].isdigit():
                    prefix, v = v[:2], v[2:]
                head = split_escaped(v, "|")[0]
                if t == "date" and date_range(v) is None:
                    raise BadRequest(f"Invalid date {v!r} for parameter {p.code!r}")
                if t in ("number", "quantity") and parse_decimal(unescape(head)) is None:
                    raise BadRequest(f"Invalid number {head!r} for parameter {p.code!r}")
                if t == "quantity" and len(split_escaped(v, "|")) not in (1, 3):
                    raise BadRequest(f"Quantity value {v!r} must be number or number|system|code")
            elif modifier == "contains" and len(norm(unescape(v))) > STRING_KEY_MAX:
                # Strings are indexed up to STRING_KEY_MAX folded characters, so a longer
                # value can never match; refused here rather than sent as a regex that the
                # database refuses (SecantusDB caps a pattern at 1,000 characters).
                raise BadRequest(
                    f":contains takes at most {STRING_KEY_MAX} characters, not {len(v)}",
                    code="too-long",
                )
            elif modifier == "of-type":
                parts = split_escaped(v, "|")
                if len(parts) != 3 or not all(parts):
                    raise BadRequest(
                        f":of-type takes type-system|type-code|value, all three present, not {v!r}"
                    )
            elif modifier in ("above", "below") and t == "token":
                parts = split_escaped(v, "|")
                if len(parts) != 2 or not all(parts):
                    raise BadRequest(f":{modifier} takes system|code, both present, not {v!r}")
                # Refused here, not when the query is built, so that lenient handling can drop it.
                subsumed(unescape(parts[0]), unescape(parts[1]), modifier)
            elif t == "composite" and len(split_escaped(v, "$")) != len(p.components):
                raise BadRequest(
                    f"Composite {p.code!r} needs {len(p.components)} `$`-separated parts"
                )
            out.append(SearchValue(v, prefix))
        return tuple(out)

    def criterion(
        self, rt: str | None, name: str, raw: str, depth: int = 0, types: tuple[str, ...] = ()
    ) -> Criterion:
        if name.startswith("_has:"):
            return self.has(rt, name, raw, depth)
        head, dot, rest = name.partition(".")
        code, _, modifier = head.partition(":")
        p = self.lookup(rt, code, types)
        if dot:
            return self.chained(rt, name, p, modifier or None, rest, raw, depth)
        mod = modifier or None
        targets: tuple[str, ...] = ()
        if mod is not None and mod not in MODIFIERS.get(p.type, ()):
            if p.type == "reference" and mod in self.reg.resource_types:
                if p.target and mod not in p.target:
                    raise BadRequest(f"{p.code!r} cannot refer to {mod}")
                targets, mod = (mod,), None
            elif p.type == "special":
                raise NotSupported(f"Parameter {p.code!r} is not supported")
            else:
                raise NotSupported(
                    f"Modifier :{mod} is not supported on {p.type} parameter {p.code!r}"
                )
        if p.code in FULL_TEXT and not p.expression:
            if rt in NO_WORD_KEYS:
                raise NotSupported(f"{p.code!r} is not supported on {rt} (no word index)")
            return self.full_text(name, p, raw, modifier or None)
        if p.type == "special":
            raise NotSupported(f"Parameter {p.code!r} is not supported")
        if mod == "of-type" and not is_identifier_param(p):
            raise BadRequest(f":of-type applies to Identifier parameters only, not {p.code!r}")
        return Criterion(name, p.code, p.type, self.values(p, raw, mod), mod, targets, param=p)

    def full_text(self, name: str, p: SearchParam, raw: str, modifier: str | None) -> Criterion:
        """`_text` / `_content`: each OR-ed value is a list of words that must all occur."""
        if modifier is not None:
            raise NotSupported(f"Modifier :{modifier} is not supported on {p.code!r}")
        if raw == "":
            raise BadRequest(f"Search parameter {p.code!r} has an empty value")
        out = []
        for v in split_escaped(raw, ","):
            n = len(words(unescape(v)))
            if n == 0:
                raise BadRequest(
                    f"{p.code} needs at least one word of {WORD_MIN} or more letters or digits, "
                    f"not {v!r}"
                )
            if n > MAX_QUERY_WORDS:
                raise BadRequest(f"{p.code} takes at most {MAX_QUERY_WORDS} words per value")
            out.append(SearchValue(v))
        return Criterion(name, p.code, "special", tuple(out), param=p)

    def chained(
        self,
        rt: str | None,
        name: str,
        p: SearchParam,
        type_mod: str | None,
        rest: str,
        raw: str,
        depth: int,
    ) -> Criterion:
        if depth + 1 >= MAX_CHAIN_DEPTH:
            raise NotSupported(f"Chains deeper than {MAX_CHAIN_DEPTH} are not supported: {name!r}")
        if p.type != "reference":
            raise BadRequest(f"Cannot chain on {p.type} parameter {p.code!r}")
        if type_mod:
            if type_mod not in self.reg.resource_types or (p.target and type_mod not in p.target):
                raise BadRequest(f"{p.code!r} cannot refer to {type_mod!r}")
            candidates: tuple[str, ...] = (type_mod,)
        else:
            candidates = p.target or self.reg.resource_types
        chain_code = rest.partition(".")[0].partition(":")[0]
        chain = []
        for t in candidates:
            if chain_code.startswith("_has") or self.reg.get(t, chain_code) is not None:
                chain.append((t, self.criterion(t, rest, raw, depth + 1)))
        if not chain:
            raise BadRequest(f"No target of {p.code!r} has a search parameter {chain_code!r}")
        return Criterion(
            name, p.code, "reference", (), None, tuple(t for t, _ in chain), tuple(chain), param=p
        )

    def has(self, rt: str | None, name: str, raw: str, depth: int) -> Criterion:
        if rt is None:
            raise BadRequest("_has needs a resource type")
        if depth >= MAX_CHAIN_DEPTH:
            raise NotSupported(f"_has nested deeper than {MAX_CHAIN_DEPTH} is not supported")
        parts = name[len("_has:") :].split(":", 2)
        if len(parts) != 3 or not all(parts):
            raise BadRequest(f"_has must be _has:Type:reference-param:param, not {name!r}")
        src, ref_code, inner = parts
        ref = self.lookup(src, ref_code)
        if ref.type != "reference" or (ref.target and rt not in ref.target):
            raise BadRequest(f"{src}.{ref_code} is not a reference to {rt}")
        inner_c = self.criterion(src, inner, raw, depth + 1)
        return Criterion(name, "_has", "special", (), has=Has(src, ref_code, inner_c))

    def include(self, name: str, value: str, rev: bool) -> tuple[Include, ...]:
        iterate = name.endswith((":iterate", ":recurse"))
        if name.partition(":")[2] not in ("", "iterate", "recurse"):
            raise BadRequest(f"Unknown modifier on {name!r}")
        if value == "*":
            if rev or self.rt is None:
                raise NotSupported(f"{name}=* is supported on type-level _include only")
            return (Include(self.rt, "*", None, iterate),)
        parts = value.split(":")
        if len(parts) not in (2, 3):
            raise BadRequest(f"{name} must be Type:param[:target], not {value!r}")
        src, code = parts[0], parts[1]
        p = self.lookup(src, code)
        if p.type != "reference":
            raise BadRequest(f"{src}:{code} is not a reference parameter")
        target = parts[2] if len(parts) == 3 else None
        if target and (
            target not in self.reg.resource_types or (p.target and target not in p.target)
        ):
            raise BadRequest(f"{src}:{code} cannot refer to {target!r}")
        if not rev and not iterate and self.rt not in (None, src):
            raise BadRequest(f"_include source {src!r} is not the searched type {self.rt!r}")
        return (Include(src, code, target, iterate),)

    def sort(self, value: str, types: tuple[str, ...]) -> tuple[SortKey, ...]:
        keys = []
        for part in value.split(","):
            desc = part.startswith("-")
            code = part[1:] if desc else part
            p = self.lookup(self.rt, code, types)
            if p.type in ("composite", "special") or (p.code in FULL_TEXT and not p.expression):
                raise NotSupported(f"Cannot sort on {p.type} parameter {code!r}")
            keys.append(SortKey(code, desc))
        return tuple(keys)


def parse_search(
    resource_type: str | None,
    params: list[tuple[str, str]],
    registry: Registry,
    *,
    strict: bool = True,
) -> SearchRequest:
    """Parse `[(name, value), ...]` (repeated names are ANDed) into a `SearchRequest`."""
    ps = _Parser(resource_type, registry)
    criteria: list[Criterion] = []
    used: list[tuple[str, str]] = []
    dropped: list[tuple[str, str, str]] = []
    opts: dict[str, object] = {"count": DEFAULT_COUNT, "types": ()}
    includes: list[Include] = []
    revincludes: list[Include] = []
    # `_type` first: it decides which parameters a system-level search knows.
    for name, value in params:
        if name == "_type" and resource_type is None:
            asked = tuple(t for t in value.split(",") if t)
            bad = [t for t in asked if t not in registry.resource_types]
            if bad or not asked:
                err = BadRequest(f"Unknown resource type(s) in _type: {','.join(bad) or value!r}")
                if strict:
                    raise err
                dropped.append((name, value, err.diagnostics))
            else:
                opts["types"] = asked
    types: tuple[str, ...] = opts["types"]  # type: ignore[assignment]
    for name, value in params:
        try:
            if name in IGNORED or (name == "_type" and resource_type is None):
                if name == "_type" and types:
                    used.append((name, value))
                continue
            if name in UNSUPPORTED:
                raise NotSupported(f"Parameter {name!r} is not supported")
            if name == "_count":
                if not value.isdigit():
                    raise BadRequest(f"_count must be a non-negative integer, not {value!r}")
                opts["count"] = min(int(value), MAX_COUNT)
            elif name == "_sort":
                opts["sort"] = ps.sort(value, types)
            elif name.partition(":")[0] == "_include":
                includes += ps.include(name, value, rev=False)
            elif name.partition(":")[0] == "_revinclude":
                revincludes += ps.include(name, value, rev=True)
            elif name == "_summary":
                if value not in SUMMARY:
                    raise BadRequest(f"_summary must be one of {', '.join(SUMMARY)}")
                opts["summary"] = None if value == "false" else value
            elif name == "_elements":
                opts["elements"] = tuple(e.strip() for e in value.split(",") if e.strip())
            elif name == "_total":
                if value not in TOTAL:
                    raise BadRequest(f"_total must be one of {', '.join(TOTAL)}")
                opts["total"] = value
            elif name in TOTAL_ALIASES:
                if value not in TOTAL_ALIASES[name]:
                    raise BadRequest(f"{name} must be one of {', '.join(TOTAL_ALIASES[name])}")
                opts.setdefault("total", TOTAL_ALIASES[name][value])
            elif name == "_cursor":
                opts["cursor"] = value
                continue  # the bundle writes its own paging links
            else:
                criteria.append(ps.criterion(resource_type, name, value, types=types))
            used.append((name, value))
        except FhirError as e:
            if strict:
                raise
            dropped.append((name, value, e.diagnostics))
    return SearchRequest(
        resource_type=resource_type,
        criteria=tuple(criteria),
        types=types,
        includes=tuple(includes),
        revincludes=tuple(revincludes),
        sort=opts.get("sort", ()),  # type: ignore[arg-type]
        count=opts["count"],  # type: ignore[arg-type]
        summary=opts.get("summary"),  # type: ignore[arg-type]
        elements=opts.get("elements", ()),  # type: ignore[arg-type]
        total=opts.get("total"),  # type: ignore[arg-type]
        cursor=opts.get("cursor"),  # type: ignore[arg-type]
        used=tuple(used),
        dropped=tuple(dropped),
    )
