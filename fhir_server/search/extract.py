"""Index entries extracted at write time (the document's `ix` field, docs/search.md).

For every search parameter of the resource's type the compiled expression is evaluated and
each value turned into precomputed keys, by parameter type
(https://hl7.org/fhir/R4/search.html#ptypes), never by resource type:

- `k`:  equality keys `code=value` (token, reference, uri, `:exact`, `:identifier`,
        `:of-type`, composite), presence keys `code:present` / `code:missing` (for
        `:missing`) and word keys `_text=word` / `_content=word`;
- `s`:  `code|folded string` for string prefix search, `code:text|...` for token `:text`,
        `code:uri|...` for uri `:below`;
- `lo`, `hi`: `code|<ordered key>` lower and upper ends of dates, numbers and quantities;
- `o`:  one scalar per parameter to sort on (`_sort`).
"""

from __future__ import annotations

import html
import re
from typing import Any

from fhir_server.access.identifiers import identifiers as identifier_table
from fhir_server.search.paths import Node
from fhir_server.search.registry import Registry, SearchParam
from fhir_server.search.values import (
    MAX_INSTANT,
    MIN_INSTANT,
    UCUM,
    date_range,
    norm,
    num_key,
    ucum_canonical,
    words,
)

STRING_KEY_MAX = 100  # folded strings are cut here; prefix search beyond it is approximate
_TAG = re.compile(r"<[^>]*>")
LOCAL_REF = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")
MAX_TYPE_CODINGS = 5  # Identifier.type codings indexed for `:of-type`, per identifier
ANY_UNIT = "="  # marks number keys and unit-less quantity keys (hex digits never start with it)
# `_text` / `_content` word keys per resource, and characters read to find them: a bound on
# index size and on write-time CPU whatever the resource (docs/search.md).
MAX_WORDS = 500
MAX_TEXT_CHARS = 200_000
# Types written by the server itself at high volume, searched by their structured parameters:
# no `_text`/`_content` word keys. For AuditEvent (one per request) the words were a third of
# its index keys; dropping them cut the database CPU of an audited request by a fifth
# (bench/audit.py).
NO_WORD_KEYS = frozenset({"AuditEvent"})

# Elements whose strings are identifiers or machinery, not content, for `_content`; the
# narrative (`div`) is `_text`'s.
CONTENT_SKIP = frozenset(
    {"id", "meta", "reference", "system", "url", "data", "div", "resourceType", "fullUrl"}
)
# Params never indexed in `ix`: served from top-level fields.
SKIP = frozenset({"_lastUpdated"})


class _Out:
    __slots__ = ("k", "s", "lo", "hi", "o")

    def __init__(self) -> None:
        self.k: set[str] = set()
        self.s: set[str] = set()
        self.lo: set[str] = set()
        self.hi: set[str] = set()
        self.o: dict[str, Any] = {}

    def sort(self, code: str, v: Any) -> None:
        cur = self.o.get(code)
        if cur is None or v < cur:
            self.o[code] = v


# --- per-type value decomposition -------------------------------------------------------


def token_parts(node: Node) -> tuple[list[tuple[str | None, str]], list[str]]:
    """(system, code) pairs and display texts of a token-typed value."""
    v = node.value
    if isinstance(v, bool):
        return [(None, "true" if v else "false")], []
    if isinstance(v, (str, int, float)):
        return [(None, str(v))], []
    if not isinstance(v, dict):
        return [], []
    codes: list[tuple[str | None, str]] = []
    texts: list[str] = []
    if "coding" in v or ("text" in v and "value" not in v and "code" not in v):
        for c in v.get("coding", ()):
            if isinstance(c, dict) and c.get("code") is not None:
                codes.append((c.get("system"), str(c["code"])))
            if isinstance(c, dict) and isinstance(c.get("display"), str):
                texts.append(c["display"])
        if isinstance(v.get("text"), str):
            texts.append(v["text"])
    elif "value" in v and "code" not in v:  # Identifier, ContactPoint
        if v.get("value") is not None:
            codes.append((v.get("system"), str(v["value"])))
        t = v.get("type")
        if isinstance(t, dict) and isinstance(t.get("text"), str):
            texts.append(t["text"])
    elif v.get("code") is not None:  # Coding, Quantity used as a token
        codes.append((v.get("system"), str(v["code"])))
        if isinstance(v.get("display"), str):
            texts.append(v["display"])
    return codes, texts


def identifier_type_frags(node: Node) -> list[str]:
    """`type-system|type-code|value` of an Identifier with a coded type, for `:of-type`
    (https://hl7.org/fhir/R4/search.html#token); a type coding without a system or code, or
    an identifier without a value, cannot be searched that way."""
    v = node.value
    if not isinstance(v, dict) or v.get("value") is None or "code" in v:
        return []
    t = v.get("type")
    if not isinstance(t, dict):
        return []
    out = []
    for c in t.get("coding", ())[:MAX_TYPE_CODINGS]:
        if isinstance(c, dict) and c.get("system") and c.get("code") is not None:
            out.append(f"{c['system']}|{c['code']}|{v['value']}")
    return out


def token_frags(system: str | None, code: str) -> list[str]:
    """The forms a token value answers to: `code`, `system|code` (or `|code`), `system|`."""
    out = [code, f"{system or ''}|{code}"]
    if system:
        out.append(f"{system}|")
    return out


def identifier_frags(system: str | None, code: str) -> list[str]:
    """`token_frags`, for the identifier systems of profiles/exchange/identifiers.json under
    each URI of the identity: an alias answers the canonical system's search, and back."""
    known = identifier_table().of(system)
    if known is None or not known.aliases:
        return token_frags(system, code)
    return [code, *(f for u in known.uris for f in (f"{u}|{code}", f"{u}|"))]


def reference_frags(node: Node) -> tuple[list[str], list[str]]:
    """Keys a reference answers to, and its `:identifier` keys."""
    v = node.value
    refs: list[str] = []
    idents: list[str] = []
    if isinstance(v, str):  # canonical / uri used as a reference
        refs.append(v)
        if "|" in v:
            refs.append(v.split("|", 1)[0])
        m = LOCAL_REF.match(v)
        if m:
            refs.append(m.group(2))
        return refs, idents
    if not isinstance(v, dict):
        return refs, idents
    ref = v.get("reference")
    if isinstance(ref, str) and not ref.startswith("#"):
        m = LOCAL_REF.match(ref)
        if m:
            refs += [f"{m.group(1)}/{m.group(2)}", m.group(2)]
        else:
            refs.append(ref)
    ident = v.get("identifier")
    if isinstance(ident, dict) and ident.get("value") is not None:
        val = str(ident["value"])
        idents += [val, f"{ident.get('system') or ''}|{val}"]
    return refs, idents


def string_parts(node: Node) -> list[str]:
    v = node.value
    if isinstance(v, str):
        return [v]
    out: list[str] = []
    if isinstance(v, dict):
        for x in v.values():
            if isinstance(x, str):
                out.append(x)
            elif isinstance(x, list):
                out += [y for y in x if isinstance(y, str)]
    return out


def date_parts(node: Node) -> list[tuple[str, str]]:
    v = node.value
    if isinstance(v, str):
        r = date_range(v)
        return [r] if r else []
    if not isinstance(v, dict):
        return []
    if "start" in v or "end" in v:  # Period: an open end is unbounded
        s = date_range(v["start"]) if isinstance(v.get("start"), str) else None
        e = date_range(v["end"]) if isinstance(v.get("end"), str) else None
        return [(s[0] if s else MIN_INSTANT, e[1] if e else MAX_INSTANT)]
    out: list[tuple[str, str]] = []
    for ev in v.get("event", ()):  # Timing
        r = date_range(ev) if isinstance(ev, str) else None
        if r:
            out.append(r)
    bounds = (v.get("repeat") or {}).get("boundsPeriod")
    if isinstance(bounds, dict):
        out += date_parts(Node(bounds, "Period"))
    return out


def covering_keys(lo: str, hi: str) -> list[str]:
    """The calendar year, month and day (UTC) that wholly contain [lo, hi]: `eq` searches at
    those precisions become one equality key instead of two range predicates."""
    out = []
    for n in (4, 7, 10):
        if lo[:n] == hi[:n] and lo[:4] not in ("0001", "9999"):
            out.append(lo[:n])
    return out


def number_of(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    return None


def quantity_frags(node: Node) -> list[tuple[str, float]]:
    """(unit prefix, value) pairs: `=` (any unit), `system|code|`, `|code|`, `|unit|`;
    UCUM quantities are stored in their canonical unit."""
    v = node.value
    n = number_of(v)
    if n is not None:
        return [(ANY_UNIT, n)]
    if not isinstance(v, dict):
        return []
    if "low" in v or "high" in v:  # Range: index both ends
        return [
            f
            for k in ("low", "high")
            if isinstance(v.get(k), dict)
            for f in quantity_frags(Node(v[k], "Quantity"))
        ]
    n = number_of(v.get("value"))
    if n is None:
        return []
    out = [(ANY_UNIT, n)]
    system, code, unit = v.get("system"), v.get("code"), v.get("unit")
    if system == UCUM and code:
        cv, cc = ucum_canonical(n, code)
        out.append((f"{UCUM}|{cc}|", cv))
    elif system and code:
        out.append((f"{system}|{code}|", n))
    for u in {code, unit} - {None}:
        out.append((f"|{u}|", n))
    return out


# --- per-parameter extraction ------------------------------------------------------------


def _index_value(out: _Out, p: SearchParam, nodes: list[Node]) -> None:
    code = p.code
    t = p.type
    if t == "token":
        for n in nodes:
            codes, texts = token_parts(n)
            for system, c in codes:
                for f in identifier_frags(system, c):
                    out.k.add(f"{code}={f}")
                out.sort(code, c)
            for tx in texts:
                out.s.add(f"{code}:text|{norm(tx)[:STRING_KEY_MAX]}")
            for f in identifier_type_frags(n):
                out.k.add(f"{code}:of-type={f}")
    elif t == "reference":
        for n in nodes:
            refs, idents = reference_frags(n)
            for r in refs:
                out.k.add(f"{code}={r}")
            for i in idents:
                out.k.add(f"{code}:identifier={i}")
            if refs:
                out.sort(code, refs[0])
    elif t == "string":
        for n in nodes:
            for s in string_parts(n):
                f = norm(s)[:STRING_KEY_MAX]
                out.s.add(f"{code}|{f}")
                out.k.add(f"{code}:exact={s[:STRING_KEY_MAX]}")
                out.sort(code, f)
    elif t == "uri":
        for n in nodes:
            if isinstance(n.value, str):
                out.k.add(f"{code}={n.value}")
                out.s.add(f"{code}:uri|{n.value[:STRING_KEY_MAX]}")
                out.sort(code, n.value)
    elif t == "date":
        for n in nodes:
            for lo, hi in date_parts(n):
                out.lo.add(f"{code}|{lo}")
                out.hi.add(f"{code}|{hi}")
                out.k.update(f"{code}:{c}" for c in covering_keys(lo, hi))
                out.sort(code, lo)
    elif t in ("number", "quantity"):
        for n in nodes:
            for prefix, val in quantity_frags(n):
                key = f"{code}|{prefix}{num_key(val)}"
                out.lo.add(key)
                out.hi.add(key)
                if prefix == ANY_UNIT:
                    out.sort(code, val)


def composite_frags(registry: Registry, p: SearchParam, comp: SearchParam, node: Node) -> list[str]:
    """Equality fragments of one composite component value (`$`-joined into the key)."""
    if comp.type == "token":
        codes, _ = token_parts(node)
        # `system|` alone is not a useful composite part: skip it to keep keys few.
        return [f for s, c in codes for f in token_frags(s, c) if not f.endswith("|")]
    if comp.type == "reference":
        return reference_frags(node)[0]
    if comp.type == "string":
        return [norm(s)[:STRING_KEY_MAX] for s in string_parts(node)]
    if comp.type == "uri":
        return [node.value] if isinstance(node.value, str) else []
    if comp.type == "date":
        return [f"{lo}${hi}" for lo, hi in date_parts(node)]
    return [f"{pre}{num_key(v)}" for pre, v in quantity_frags(node)]


def _index_composite(out: _Out, registry: Registry, p: SearchParam, nodes: list[Node]) -> None:
    comps = [registry.by_url(c.definition) for c in p.components]
    if not comps or any(c is None for c in comps):
        return
    for n in nodes:
        per: list[list[str]] = []
        for i, comp in enumerate(comps):
            assert comp is not None
            vals = registry.component_evaluator(p, i)(n)
            per.append([f for v in vals for f in composite_frags(registry, p, comp, v)])
        if not all(per):
            continue
        heads = [""]
        for frags in per[:-1]:
            heads = [f"{h}{f}$" for h in heads for f in frags]
        last = comps[-1]
        assert last is not None
        for h in heads:
            for f in per[-1]:
                if last.type == "date":
                    lo, hi = f.split("$", 1)
                    out.lo.add(f"{p.code}|{h}{lo}")
                    out.hi.add(f"{p.code}|{h}{hi}")
                elif last.type in ("quantity", "number"):
                    out.lo.add(f"{p.code}|{h}{f}")
                    out.hi.add(f"{p.code}|{h}{f}")
                else:
                    out.k.add(f"{p.code}={h}{f}")


def _bounded_words(texts: Any) -> list[str]:
    found: dict[str, None] = {}
    budget = MAX_TEXT_CHARS
    for t in texts:
        for w in words(t[:budget]):
            found.setdefault(w, None)
            if len(found) >= MAX_WORDS:
                return list(found)
        budget -= len(t)
        if budget <= 0:
            break
    return list(found)


def narrative_words(resource: dict[str, Any]) -> list[str]:
    """Words of the narrative `text.div` (XHTML: tags dropped, entities decoded), for `_text`
    (https://hl7.org/fhir/R4/search.html#text)."""
    div = (
        (resource.get("text") or {}).get("div") if isinstance(resource.get("text"), dict) else None
    )
    if not isinstance(div, str):
        return []
    plain = html.unescape(_TAG.sub(" ", div[:MAX_TEXT_CHARS]))
    return _bounded_words([plain])


def _strings(v: Any, key: str = "") -> Any:
    if isinstance(v, str):
        yield v
    elif isinstance(v, dict):
        if "value" in v and v.get("system") in identifier_table().masked_uris:
            return  # a masked identifier (access/masking.py) is no content word
        for k, x in v.items():
            if k not in CONTENT_SKIP:
                yield from _strings(x, k)
    elif isinstance(v, list):
        for x in v:
            yield from _strings(x, key)


def content_words(resource: dict[str, Any]) -> list[str]:
    """Words of every string value of the resource but ids, references, systems, urls,
    binary data and the narrative, in document order, for `_content`
    (https://hl7.org/fhir/R4/search.html#content)."""
    return _bounded_words(_strings(resource))


def index_entries(
    resource: dict[str, Any], registry: Registry, only: frozenset[str] | None = None
) -> dict[str, Any]:
    """The `ix` value of a stored document: keys for every search parameter of its type, or
    for the parameters `only` names (a collection that serves fewer searches, such as the
    audit log's: storage/audit_store.py)."""
    rt = resource.get("resourceType", "")
    params = registry.params_for(rt)
    out = _Out()
    for code, ev in registry.evaluators(rt).items():
        if code in SKIP or (only is not None and code not in only):
            continue
        p = params[code]
        nodes = ev(resource)
        if not nodes:
            out.k.add(f"{code}:missing")
            continue
        out.k.add(f"{code}:present")
        if p.type == "composite":
            _index_composite(out, registry, p, nodes)
        else:
            _index_value(out, p, nodes)
    if rt not in NO_WORD_KEYS:
        out.k.update(f"_text={w}" for w in narrative_words(resource))
        out.k.update(f"_content={w}" for w in content_words(resource))
    return {
        "k": sorted(out.k),
        "s": sorted(out.s),
        "lo": sorted(out.lo),
        "hi": sorted(out.hi),
        "o": out.o,
    }


def compartments(resource: dict[str, Any], registry: Registry) -> list[str]:
    """Patient compartments the resource is in (https://hl7.org/fhir/R4/compartmentdefinition-patient.html).

    A Patient is in its own compartment."""
    rt = resource.get("resourceType", "")
    found: list[str] = []
    if rt == "Patient" and resource.get("id"):
        found.append(f"Patient/{resource['id']}")
    evs = registry.evaluators(rt)
    for code in registry.compartment_params(rt):
        ev = evs.get(code)
        if ev is None:
            continue
        for n in ev(resource):
            for r in reference_frags(n)[0]:
                if r.startswith("Patient/") and r not in found:
                    found.append(r)
    return found


def reference_targets(ix: dict[str, Any], code: str) -> list[str]:
    """`Type/id` targets of a reference parameter, read back from stored keys (for _include)."""
    pre = f"{code}="
    out = []
    for k in ix.get("k", ()):
        if k.startswith(pre) and LOCAL_REF.match(k[len(pre) :]):
            out.append(k[len(pre) :])
    return out
