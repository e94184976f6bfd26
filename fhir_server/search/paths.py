"""Compiled search-parameter expressions.

SearchParameter.expression is FHIRPath (https://hl7.org/fhir/R4/searchparameter.html). Almost
all official expressions are unions of plain paths, optionally narrowed by `as Type`,
`.as(Type)`, `.ofType(Type)`, `.where(resolve() is Type)` or `.where(field='literal')`. Those
are compiled here into step lists and walked directly over the JSON (about 1 us per path);
anything else is compiled once with fhirpathpy (13 us per call, DESIGN.md) and evaluated with
the R4 model.

Every evaluation yields `Node`s: a JSON value with the FHIR type name that a choice element's
suffix reveals (`valueQuantity` -> `Quantity`), or None when the JSON alone does not say.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_STEP = re.compile(
    rf"""\.(?:
        (?P<as>as|ofType)\((?P<as_t>{_IDENT})\)
      | where\(resolve\(\)\s+is\s+(?P<res_t>{_IDENT})\)
      | where\((?P<w_f>{_IDENT})\s*=\s*'(?P<w_v>[^']*)'\)
      | (?P<field>{_IDENT})
    )""",
    re.X,
)
_AS_SUFFIX = re.compile(
    rf"^\((?P<inner>.+)\s+as\s+(?P<t>{_IDENT})\)$|^(?P<inner2>.+)\s+as\s+(?P<t2>{_IDENT})$"
)


@dataclass(frozen=True, slots=True)
class Node:
    value: Any
    type: str | None = None


Step = tuple[str, str, str]  # (kind, arg, arg2)
Evaluator = Callable[[Any], list[Node]]


def _parse_steps(rest: str) -> list[Step] | None:
    steps: list[Step] = []
    pos = 0
    while pos < len(rest):
        m = _STEP.match(rest, pos)
        if not m:
            return None
        if m.group("as"):
            steps.append(("as", m.group("as_t"), ""))
        elif m.group("res_t"):
            steps.append(("resolve", m.group("res_t"), ""))
        elif m.group("w_f"):
            steps.append(("where", m.group("w_f"), m.group("w_v")))
        else:
            steps.append(("field", m.group("field"), ""))
        pos = m.end()
    return steps


def compile_simple(expr: str, *, relative: bool = False) -> tuple[str, list[Step]] | None:
    """Compile one union member into (root type, steps); None if not a plain path."""
    expr = expr.strip()
    m = _AS_SUFFIX.match(expr)
    tail: list[Step] = []
    if m:
        expr = (m.group("inner") or m.group("inner2")).strip()
        tail = [("as", m.group("t") or m.group("t2"), "")]
    if relative:
        steps = _parse_steps("." + expr)
        return None if steps is None else ("", steps + tail)
    head, _, rest = expr.partition(".")
    if not re.fullmatch(_IDENT, head):
        return None
    steps = _parse_steps("." + rest) if rest else []
    if steps is None:
        return None
    return head, steps + tail


def split_union(expr: str) -> list[str]:
    """Split a FHIRPath union at top-level `|` (not inside parentheses or quotes)."""
    parts: list[str] = []
    cur: list[str] = []
    depth, quote = 0, False
    for ch in expr:
        if ch == "'":
            quote = not quote
        elif not quote and ch == "(":
            depth += 1
        elif not quote and ch == ")":
            depth -= 1
        elif not quote and depth == 0 and ch == "|":
            parts.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    if "".join(cur).strip():
        parts.append("".join(cur).strip())
    return parts


def _children(node: Node, name: str) -> Iterator[Node]:
    obj = node.value
    if not isinstance(obj, dict):
        return
    if name in obj:
        v = obj[name]
        for item in v if isinstance(v, list) else (v,):
            yield Node(item)
        return
    # Choice element `name[x]`: the JSON key carries the type as a suffix.
    n = len(name)
    for key, v in obj.items():
        if len(key) > n and key.startswith(name) and key[n].isupper():
            t = key[n:]
            if t in (
                "DateTime",
                "Date",
                "Instant",
                "Time",
                "String",
                "Integer",
                "Decimal",
                "Boolean",
                "Uri",
                "Url",
                "Canonical",
                "Code",
                "Id",
                "Markdown",
                "Oid",
                "Uuid",
                "PositiveInt",
                "UnsignedInt",
                "Base64Binary",
            ):
                t = t[0].lower() + t[1:]
            for item in v if isinstance(v, list) else (v,):
                yield Node(item, t)


def _ref_type_is(value: Any, rtype: str) -> bool:
    if not isinstance(value, dict):
        return False
    ref = value.get("reference")
    if isinstance(ref, str):
        parts = ref.split("/_history/")[0].split("/")
        return len(parts) >= 2 and parts[-2] == rtype
    return value.get("type") == rtype


def walk(nodes: list[Node], steps: list[Step]) -> list[Node]:
    for kind, arg, arg2 in steps:
        if kind == "field":
            nodes = [c for n in nodes for c in _children(n, arg)]
        elif kind == "as":
            low = arg[0].lower() + arg[1:]
            nodes = [n for n in nodes if n.type is None or n.type in (arg, low)]
            nodes = [Node(n.value, n.type or arg) for n in nodes]
        elif kind == "resolve":
            nodes = [n for n in nodes if _ref_type_is(n.value, arg)]
        else:  # where(field='literal')
            nodes = [n for n in nodes if isinstance(n.value, dict) and n.value.get(arg) == arg2]
        if not nodes:
            break
    return nodes


def _fhirpath_evaluator(expr: str) -> Evaluator:
    import fhirpathpy  # type: ignore[import-untyped]
    from fhirpathpy.models import models  # type: ignore[import-untyped]

    compiled = fhirpathpy.compile(expr, models["r4"])

    def run(resource: Any) -> list[Node]:
        try:
            out = compiled(resource)  # type: ignore[call-arg]
        except Exception:  # noqa: BLE001 - a bad expression must not break a write
            return []
        return [Node(v) for v in out if v is not None and v is not False]

    return run


def compile_for_type(expr: str, resource_type: str) -> Evaluator | None:
    """Compile the members of `expr` that apply to `resource_type` into one evaluator.

    Returns None when no member applies (the parameter is defined for other types).
    """
    simple: list[list[Step]] = []
    complex_parts: list[str] = []
    for part in split_union(expr):
        c = compile_simple(part)
        if c is not None:
            root, steps = c
            if root in (resource_type, "Resource", "DomainResource"):
                simple.append(steps)
            continue
        m = re.match(rf"^\(?\s*({_IDENT})\b", part)
        if m and m.group(1) in (resource_type, "Resource", "DomainResource"):
            complex_parts.append(part)
    if not simple and not complex_parts:
        return None
    fallback = _fhirpath_evaluator(" | ".join(complex_parts)) if complex_parts else None

    def run(resource: Any) -> list[Node]:
        root = [Node(resource)]
        out: list[Node] = []
        for steps in simple:
            out.extend(walk(root, steps))
        if fallback is not None:
            out.extend(fallback(resource))
        return out

    return run


def compile_relative(expr: str) -> Callable[[Node], list[Node]]:
    """Compile a composite component expression, evaluated from the composite's node."""
    simple: list[list[Step]] = []
    rest: list[str] = []
    for part in split_union(expr):
        c = compile_simple(part, relative=True)
        if c is None:
            rest.append(part)
        else:
            simple.append(c[1])
    fallback = _fhirpath_evaluator(" | ".join(rest)) if rest else None

    def run(node: Node) -> list[Node]:
        out: list[Node] = []
        for steps in simple:
            out.extend(walk([node], steps))
        if fallback is not None:
            out.extend(fallback(node.value))
        return out

    return run
