"""Criterion -> MongoDB filter over the `ix` keys (docs/search.md).

Pure functions, no I/O. Every user value ends up as a string operand of `$eq`/`$in`/`$nin`/
range operators on a fixed field name: no user text is ever an operator, a field name or a
regex. Semantics follow https://hl7.org/fhir/R4/search.html#ptypes and #prefix.

`elem_match`: a range over a multikey array must be wrapped in `$elemMatch`, or its two
bounds may be met by two different keys (`category:text|lab` < `code:text|body~` and
`code:text|mch` > `code:text|body`). On SecantusDB, whose planner scans the collection on any
`$elemMatch`, secantus_plan.py sends it as a plain range and re-checks it in memory
(docs/database.md, "Ranges on SecantusDB").
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from fhir_server.errors import BadRequest, NotSupported, TooCostly
from fhir_server.search.extract import ANY_UNIT, STRING_KEY_MAX, covering_keys
from fhir_server.search.parse import Criterion, SearchValue, split_escaped, unescape
from fhir_server.search.values import (
    UCUM,
    date_range,
    instant,
    norm,
    num_key,
    parse_decimal,
    parse_instant,
    precision_range,
    shift,
    ucum_canonical,
    words,
)
from fhir_server.search.valuesets import MAX_CODES, Expander, Lookup, subsumed

NOTHING: dict[str, Any] = {"_id": {"$in": []}}
TOP = "\uffff"  # above every key character we write


def any_of(filters: list[dict[str, Any]]) -> dict[str, Any]:
    if not filters:
        return NOTHING
    return filters[0] if len(filters) == 1 else {"$or": filters}


def all_of(filters: list[dict[str, Any]]) -> dict[str, Any]:
    """Conjunction, kept flat where fields do not repeat: SecantusDB's planner only matches
    indexes against a flat predicate list, and MongoDB treats both forms alike."""
    merged: dict[str, Any] = {}
    rest: list[dict[str, Any]] = []
    for f in filters:
        if not f:
            continue
        if _merge_equalities(merged, f):
            continue
        if any(k in merged or k == "$and" for k in f):
            rest.append(f)
        else:
            # A lone `$or` stays beside the fields (an implicit AND on both databases);
            # SecantusDB scans on any top-level `$or`, so secantus_plan.py runs it branch by
            # branch, each branch with these fields.
            merged.update(f)
    if not rest:
        return merged
    return {"$and": ([merged] if merged else []) + rest}


def _equality_keys(cond: Any) -> list[str] | None:
    """The key strings a condition requires all of: "k" or {"$all": [...]}; else None."""
    if isinstance(cond, str):
        return [cond]
    if isinstance(cond, dict) and set(cond) == {"$all"}:
        return list(cond["$all"])
    return None


def _merge_equalities(merged: dict[str, Any], f: dict[str, Any]) -> bool:
    """Fold `f` into `merged` when its only overlap is equalities on a key array.

    Two keys required of one multikey field become `{field: {"$all": [a, b]}}`: MongoDB
    bounds the index on the first and checks the rest; SecantusDB uses the index for `$all`
    but scans the collection for the equivalent `$and` (bench/search.py measured 18 ms
    against 726 ms at 10k resources). Returns False, changing nothing, otherwise.
    """
    overlap = [k for k in f if k in merged]
    if not overlap or any(k.startswith("$") for k in f):
        return False
    for k in overlap:
        if _equality_keys(merged[k]) is None or _equality_keys(f[k]) is None:
            return False
    for k, cond in f.items():
        if k in merged:
            keys = list(
                dict.fromkeys((_equality_keys(merged[k]) or []) + (_equality_keys(cond) or []))
            )
            merged[k] = keys[0] if len(keys) == 1 else {"$all": keys}
        else:
            merged[k] = cond
    return True


def keys_in(field: str, keys: list[str], negate: bool = False) -> dict[str, Any]:
    keys = list(dict.fromkeys(keys))
    if negate:
        return {field: {"$nin": keys}}
    return {field: keys[0]} if len(keys) == 1 else {field: {"$in": keys}}


def key_range(
    field: str, lower: tuple[str, str], upper: tuple[str, str], elem_match: bool
) -> dict[str, Any]:
    """`lower`/`upper` are (operator, key) on one multikey string array."""
    cond = {lower[0]: lower[1], upper[0]: upper[1]}
    return {field: {"$elemMatch": cond} if elem_match else cond}


def prefix_range(field: str, prefix: str, elem_match: bool) -> dict[str, Any]:
    return key_range(field, ("$gte", prefix), ("$lt", prefix + TOP), elem_match)


# --- ordered types: one search value [slo, shi) against stored [lo, hi] ---------------------


def ordered(
    field_prefix: str,
    op: str,
    slo: str,
    shi: str,
    elem_match: bool,
    ap: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """Prefix semantics (https://hl7.org/fhir/R4/search.html#prefix) on `ix.lo`/`ix.hi` keys
    `field_prefix + ordered value`; `slo`/`shi` are inclusive bounds of the search value."""
    low = ("$gte", field_prefix)
    high = ("$lt", field_prefix + TOP)

    def cmp(field: str, mop: str, v: str) -> dict[str, Any]:
        bound = (mop, field_prefix + v)
        if mop in ("$gt", "$gte"):
            return key_range(f"ix.{field}", bound, high, elem_match)
        return key_range(f"ix.{field}", low, bound, elem_match)

    if op == "eq":
        # A value inside [slo, shi] has both ends inside it: each end bounded on both sides,
        # so each clause alone is a tight index range (on SecantusDB one of them is looked up
        # alone, secantus_plan.py), and one value's start can no longer pair with another's
        # end beyond the range.
        inside = (("$gte", field_prefix + slo), ("$lte", field_prefix + shi))
        return all_of(
            [key_range("ix.lo", *inside, elem_match), key_range("ix.hi", *inside, elem_match)]
        )
    if op == "ne":
        return {"$or": [cmp("lo", "$lt", slo), cmp("hi", "$gt", shi)]}
    if op == "gt":
        return cmp("hi", "$gt", shi)
    if op == "lt":
        return cmp("lo", "$lt", slo)
    if op == "ge":
        return cmp("hi", "$gte", slo)
    if op == "le":
        return cmp("lo", "$lte", shi)
    if op == "sa":
        return cmp("lo", "$gt", shi)
    if op == "eb":
        return cmp("hi", "$lt", slo)
    assert ap is not None  # "ap": overlap with the widened search range
    return all_of([cmp("lo", "$lte", ap[1]), cmp("hi", "$gte", ap[0])])


def date_filter(code: str, sv: SearchValue, elem_match: bool) -> dict[str, Any]:
    r = date_range(sv.value)
    if r is None:
        raise BadRequest(f"Invalid date {sv.value!r}")
    slo, shi = r
    if sv.prefix == "eq" and len(sv.value) in (4, 7, 10):
        # A year, month or day: one equality on the precomputed covering key.
        cover = covering_keys(slo, shi)
        if cover:
            return {"ix.k": f"{code}:{cover[-1]}"}
    ap = None
    if sv.prefix == "ap":
        lo_dt, hi_dt = parse_instant(slo), parse_instant(shi)
        now = datetime.now(UTC).replace(tzinfo=None)
        # "ap": within 10% of the distance to now, at least a day (search.html#prefix).
        slack = max(abs(now - lo_dt) * 0.1, timedelta(days=1))
        ap = (instant(shift(lo_dt, -slack)), instant(shift(hi_dt, slack)))
    return ordered(f"{code}|", sv.prefix, slo, shi, elem_match, ap)


def lu_filter(sv: SearchValue) -> dict[str, Any]:
    """`_lastUpdated` on the top-level `lu` instant (index `(rt, lu)`)."""
    r = date_range(sv.value)
    if r is None:
        raise BadRequest(f"Invalid date {sv.value!r}")
    lo, hi = parse_instant(r[0]), parse_instant(r[1])
    ops = {
        "eq": {"$gte": lo, "$lte": hi},
        "ap": {"$gte": shift(lo, -timedelta(days=1)), "$lte": shift(hi, timedelta(days=1))},
        "gt": {"$gt": hi},
        "sa": {"$gt": hi},
        "ge": {"$gte": lo},
        "lt": {"$lt": lo},
        "eb": {"$lt": lo},
        "le": {"$lte": hi},
    }
    if sv.prefix == "ne":
        return {"$or": [{"lu": {"$lt": lo}}, {"lu": {"$gt": hi}}]}
    return {"lu": ops[sv.prefix]}


def _num_bounds(sv: SearchValue, text: str, factor: float = 1.0) -> tuple[float, float, float]:
    d = parse_decimal(text)
    if d is None:
        raise BadRequest(f"Invalid number {text!r}")
    a, b = precision_range(d)
    return float(d) * factor, a * factor, b * factor


def number_filter(
    field_prefix: str,
    sv: SearchValue,
    elem_match: bool,
    text: str | None = None,
    factor: float = 1.0,
) -> dict[str, Any]:
    """Numbers are stored as points; the search value carries its precision
    (https://hl7.org/fhir/R4/search.html#number): `eq 100` is [99.5, 100.5)."""
    v, a, b = _num_bounds(sv, text if text is not None else unescape(sv.value), factor)
    lo, hi = (a, b) if a <= b else (b, a)
    exact = num_key(v)
    key_lo, key_hi = num_key(lo), num_key(hi)
    p = field_prefix
    low, high = ("$gte", p), ("$lt", p + "g")  # hex keys never reach "g"
    rng = lambda lb, ub: key_range("ix.lo", lb, ub, elem_match)  # noqa: E731
    op = sv.prefix
    if op == "eq":
        return rng(("$gte", p + key_lo), ("$lt", p + key_hi))
    if op == "ne":
        return {"$or": [rng(low, ("$lt", p + key_lo)), rng(("$gte", p + key_hi), high)]}
    if op in ("gt", "sa"):
        return rng(("$gt", p + exact), high)
    if op in ("lt", "eb"):
        return rng(low, ("$lt", p + exact))
    if op == "ge":
        return rng(("$gte", p + exact), high)
    if op == "le":
        return rng(low, ("$lte", p + exact))
    slack = abs(v) * 0.1  # "ap": within 10%
    return rng(("$gte", p + num_key(v - slack)), ("$lte", p + num_key(v + slack)))


def quantity_unit_prefix(system: str, code: str, value: str) -> tuple[str, float]:
    """Key prefix and factor of a `number|system|code` search value, UCUM canonicalised like
    the stored keys."""
    if system == UCUM and code:
        # The conversion is a factor, so it is measured on 1 and not on the value: a value
        # that underflows to 0.0 as a float (1e-400) would otherwise divide by zero.
        factor, cc = ucum_canonical(1.0, code)
        return f"{UCUM}|{cc}|", factor
    if system and code:
        return f"{system}|{code}|", 1.0
    if code:
        return f"|{code}|", 1.0
    return ANY_UNIT, 1.0


def quantity_filter(code: str, sv: SearchValue, elem_match: bool, head: str = "") -> dict[str, Any]:
    parts = [unescape(x) for x in split_escaped(sv.value, "|")]
    number = parts[0]
    system, unit = (parts[1], parts[2]) if len(parts) == 3 else ("", "")
    pre, factor = quantity_unit_prefix(system, unit, number)
    return number_filter(f"{code}|{head}{pre}", sv, elem_match, number, factor)


def token_keys(code: str, value: str) -> list[str]:
    parts = split_escaped(value, "|")
    if len(parts) == 1:
        return [f"{code}={unescape(value)}"]
    system, c = unescape(parts[0]), unescape("|".join(parts[1:]))
    return [f"{code}={system}|{c}"]


def codes_filter(code: str, codes: set[tuple[str, str]], negate: bool = False) -> dict[str, Any]:
    """Token keys of an expanded value set or a subsumption closure: `$in` (or `$nin` for
    `:not-in`) over `code=system|code` (https://hl7.org/fhir/R4/search.html#token), plus
    `code=|code` for values stored without a system: a `code` element (Patient.gender,
    Observation.status) has its system implied by its binding, so `gender:in=` the
    administrative-gender value set must find `"gender": "female"`."""
    if not codes:
        return {} if negate else NOTHING
    keys = [k for s, c in sorted(codes) for k in (f"{code}={s}|{c}", f"{code}=|{c}")]
    return keys_in("ix.k", keys, negate=negate)


async def in_value_sets(c: Criterion, lookup: Lookup) -> dict[str, Any]:
    """Token `:in` / `:not-in`: the union of the value sets' expansions (values are OR-ed).
    `lookup` finds stored ValueSets (execute passes a time-limited, policy-scoped query)."""
    expander = Expander(lookup)
    codes: set[tuple[str, str]] = set()
    for v in c.values:
        codes |= await expander.expand(unescape(v.value))
    if len(codes) > MAX_CODES:
        raise TooCostly(f"{c.name} expands to {len(codes)} codes, more than {MAX_CODES}")
    return codes_filter(c.code, codes, negate=c.modifier == "not-in")


def of_type_key(code: str, value: str) -> str:
    """`identifier:of-type=type-system|type-code|value` (parse.py checked the three parts)."""
    system, type_code, ident = (unescape(x) for x in split_escaped(value, "|"))
    return f"{code}:of-type={system}|{type_code}|{ident}"


def token_frag(value: str) -> str:
    parts = split_escaped(value, "|")
    if len(parts) == 1:
        return unescape(value)
    return f"{unescape(parts[0])}|{unescape('|'.join(parts[1:]))}"


def reference_keys(c: Criterion, value: str) -> list[str]:
    v = unescape(value)
    if c.modifier == "identifier":
        return token_keys(f"{c.code}:identifier", value)
    if c.target_types and "/" not in v:
        return [f"{c.code}={t}/{v}" for t in c.target_types]
    v = v.split("/_history/")[0]
    return [f"{c.code}={v}"]


def uri_above(code: str, value: str) -> list[str]:
    """`:above` on a uri: stored uris that are a prefix of the value at a `/` boundary."""
    keys = [f"{code}={value}"]
    cut = value
    while "/" in cut.rstrip("/").split("://", 1)[-1]:
        cut = cut.rstrip("/").rsplit("/", 1)[0]
        keys.append(f"{code}={cut}")
    return keys


def composite_filter(
    c: Criterion, sv: SearchValue, comp_types: list[str], elem_match: bool
) -> dict[str, Any]:
    parts = split_escaped(sv.value, "$")
    head = "".join(
        (
            token_frag(x)
            if t == "token"
            else norm(unescape(x))[:STRING_KEY_MAX]
            if t == "string"
            else unescape(x)
        )
        + "$"
        for x, t in zip(parts[:-1], comp_types[:-1], strict=True)
    )
    last, lt = parts[-1], comp_types[-1]
    if lt in ("quantity", "number", "date"):
        prefix = "eq"
        if last[:2].isalpha() and last[:2] in (
            "eq",
            "ne",
            "gt",
            "lt",
            "ge",
            "le",
            "sa",
            "eb",
            "ap",
        ):
            prefix, last = last[:2], last[2:]
        inner = SearchValue(last, prefix)
        if lt == "date":
            r = date_range(last)
            if r is None:
                raise BadRequest(f"Invalid date {last!r} in {c.name}")
            return ordered(
                f"{c.code}|{head}",
                prefix,
                r[0],
                r[1],
                elem_match,
                (r[0], r[1]) if prefix == "ap" else None,
            )
        if lt == "quantity":
            return quantity_filter(c.code, inner, elem_match, head)
        return number_filter(f"{c.code}|{head}{ANY_UNIT}", inner, elem_match)
    frag = (
        token_frag(last)
        if lt == "token"
        else norm(unescape(last))[:STRING_KEY_MAX]
        if lt == "string"
        else unescape(last)
    )
    return {"ix.k": f"{c.code}={head}{frag}"}


def criterion_filter(
    c: Criterion,
    *,
    resource_type: str | None,
    elem_match: bool,
    comp_types: list[str] | None = None,
) -> dict[str, Any]:
    """Filter for one non-chained, non-_has criterion. Values are OR-ed."""
    if c.chain or c.has:
        raise ValueError("chained criteria are resolved by execute")
    if c.modifier == "missing":
        want = {"true": "missing", "false": "present"}
        wanted = {want[v.value] for v in c.values}
        if len(wanted) > 1:
            return {}
        if c.code == "_lastUpdated":
            return {} if wanted == {"present"} else NOTHING
        return {"ix.k": f"{c.code}:{wanted.pop()}"}
    if c.code == "_lastUpdated":
        return any_of([lu_filter(v) for v in c.values])
    if c.code == "_id" and resource_type is not None:
        ids = [f"{resource_type}/{unescape(v.value)}" for v in c.values]
        return keys_in("_id", ids)
    if c.code in ("_text", "_content") and c.type == "special":
        # Whole words, all required (`$all` on the key array), values OR-ed.
        return any_of(
            [
                all_of([{"ix.k": f"{c.code}={w}"} for w in words(unescape(v.value))])
                for v in c.values
            ]
        )
    t, code, vals = c.type, c.code, c.values
    if t == "token":
        if c.modifier == "text":
            return any_of(
                [
                    prefix_range(
                        "ix.s",
                        f"{code}:text|{norm(unescape(v.value))[:STRING_KEY_MAX]}",
                        elem_match,
                    )
                    for v in vals
                ]
            )
        if c.modifier == "of-type":
            return keys_in("ix.k", [of_type_key(code, v.value) for v in vals])
        if c.modifier in ("in", "not-in"):
            raise ValueError(":in and :not-in are expanded by execute (stored value sets)")
        if c.modifier in ("above", "below"):
            found: set[tuple[str, str]] = set()
            for v in vals:
                system, tcode = (unescape(x) for x in split_escaped(v.value, "|"))
                found |= subsumed(system, tcode, c.modifier)
            return codes_filter(code, found)
        keys = [k for v in vals for k in token_keys(code, v.value)]
        return keys_in("ix.k", keys, negate=c.modifier == "not")
    if t == "string":
        if c.modifier == "exact":
            return keys_in("ix.k", [f"{code}:exact={unescape(v.value)}" for v in vals])
        if c.modifier == "contains":
            # An escaped regex anchored on the parameter: MongoDB bounds the index scan by the
            # `code|` prefix, and a regex is matched key by key (no cross-key false hits).
            return any_of(
                [
                    {
                        "ix.s": {
                            "$regex": f"^{re.escape(code)}\\|.*{re.escape(norm(unescape(v.value)))}"
                        }
                    }
                    for v in vals
                ]
            )
        return any_of(
            [
                prefix_range(
                    "ix.s", f"{code}|{norm(unescape(v.value))[:STRING_KEY_MAX]}", elem_match
                )
                for v in vals
            ]
        )
    if t == "uri":
        if c.modifier == "below":
            return any_of(
                [prefix_range("ix.s", f"{code}:uri|{unescape(v.value)}", elem_match) for v in vals]
            )
        if c.modifier == "above":
            return keys_in("ix.k", [k for v in vals for k in uri_above(code, unescape(v.value))])
        return keys_in("ix.k", [f"{code}={unescape(v.value)}" for v in vals])
    if t == "reference":
        return keys_in("ix.k", [k for v in vals for k in reference_keys(c, v.value)])
    if t == "date":
        return any_of([date_filter(code, v, elem_match) for v in vals])
    if t == "number":
        return any_of([number_filter(f"{code}|{ANY_UNIT}", v, elem_match) for v in vals])
    if t == "quantity":
        return any_of([quantity_filter(code, v, elem_match) for v in vals])
    if t == "composite":
        if not comp_types:
            raise NotSupported(f"Composite {code!r} has components this server cannot resolve")
        return any_of([composite_filter(c, v, comp_types, elem_match) for v in vals])
    raise NotSupported(f"Search on {t} parameter {code!r} is not supported")


def reference_in(code: str, targets: list[str]) -> dict[str, Any]:
    """Resolved chain: the reference must point at one of `targets` (`Type/id`)."""
    if not targets:
        return NOTHING
    return keys_in("ix.k", [f"{code}={t}" for t in targets])


def sort_field(code: str) -> str:
    if code == "_id":
        return "_id"
    if code == "_lastUpdated":
        return "lu"
    return f"ix.o.{code}"
