"""How a search filter runs on SecantusDB: range clauses on a looser index range, re-checked
in memory (docs/database.md, "Ranges on SecantusDB").

MongoDB gets every filter as built and bounds its index scans itself. SecantusDB 0.7.0b3
never bounds an index by `$elemMatch`, `$regex` or a top-level `$or`/`$and` (it scans the
collection), yet every string prefix, token `:text`, uri `:below`, date, number and quantity
criterion is an `$elemMatch` range over one `ix` key array (query.py), `:contains` is a
regex, and multiple values and `ne` are `$or`s. It does bound `{rt: T, field: {$gte: a,
$lt: b}}` exactly (a compound range on `(rt, field, _id)`). So here, when no point clause
(`_id`, `comp`, an `ix.k` key) bounds the query already:

1. `{rt, field: {$elemMatch: R}}` alone is sent as `{rt, field: R'}`, R' being R's bounds as
   `[$gte, $lt)` (an inclusive upper bound on an index field with fields after it loses the
   boundary value on SecantusDB); the database sorts and limits, every row is re-checked
   against R. The index scan returns only keys inside R', so no row is dropped on
   SecantusDB's plan; if one ever is on a full page, the page is not trusted and 2 runs.
2. Otherwise, when every clause can be re-checked in memory: one range (or the `$or`, branch
   by branch) is looked up that way, with `_id`, the re-checked fields and the sort fields
   only; the rows are re-checked against the WHOLE conjunction, sorted as MongoDB sorts, and
   the page's ids (at most NARROW_MAX) fetched by `_id: {$in: ids}` AND every clause but the
   `$or`: point lookups, and the database applies the rest again (the access policy among
   it), sorts and limits. The total is the number of re-checked rows.
3. Anything else (a clause not re-checkable here, more than RESOLVE_MAX rows from a lookup,
   a page over NARROW_MAX) is sent as built, point clause first, as before.

A re-check is exact where MongoDB's semantics are plain: strings compare by code point
(UTF-8 byte order); `$elemMatch` holds when one element meets every bound, a plain range on
an array when each bound is met by some element; a regex is Python's `re` on the escaped
patterns query.py writes. Anything else is not re-checked here (shape 3).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

Doc = dict[str, Any]
Sort = list[tuple[str, int]]

RANGE_FIELDS = ("ix.s", "ix.lo", "ix.hi")  # the key arrays that ranges run on (query.py)
POINT_FIELDS = ("_id", "comp", "ix.k")  # what SecantusDB looks up key by key
RESOLVE_MAX = 5000  # rows a lookup may return before the filter is sent as built
# ids in one narrowed query: SecantusDB checks `_id: {$in}` by a linear search per document,
# so its cost grows with the square of the list (1,000 ids: 5.5 s, measured).
NARROW_MAX = 200
POINT_IN_MAX = 1000  # a `$in` longer than this is not moved first (`point_first`)
_CMP: dict[str, Callable[[Any, Any], bool]] = {
    "$gt": operator.gt,
    "$gte": operator.ge,
    "$lt": operator.lt,
    "$lte": operator.le,
}
OR_MAX = 20  # branches of a top-level `$or` run one by one
NUL = "\x00"  # the string right after `v` in code-point order is `v + NUL`


class _Store(Protocol):
    async def find(
        self,
        filt: Doc,
        projection: Doc | None = None,
        *,
        sort: Sort | None = None,
        limit: int = 0,
    ) -> list[Doc]: ...

    async def count(self, filt: Doc) -> int: ...


def values(doc: Doc, path: str) -> list[Any]:
    """The values at a dotted path, an array as its elements (how a filter reads them)."""
    cur: Any = doc
    for part in path.split("."):
        if not isinstance(cur, dict):
            return []
        cur = cur.get(part)
    if cur is None:
        return []
    return list(cur) if isinstance(cur, list) else [cur]


def _comparable(v: Any, bound: Any) -> bool:
    """Same BSON type bracket for the types our filters compare (strings, dates)."""
    return (isinstance(v, str) and isinstance(bound, str)) or (
        isinstance(v, datetime) and isinstance(bound, datetime)
    )


def _successor(prefix: str) -> str | None:
    """The least string above every string that starts with `prefix`."""
    if not prefix:
        return None
    last = ord(prefix[-1])
    if last >= 0x10FFFF or 0xD7FF <= last < 0xE000:
        return None
    return prefix[:-1] + chr(last + 1)


def literal_prefix(pattern: str) -> str | None:
    """The literal text an anchored pattern `^...` starts with (query.py writes escaped
    patterns: `\\x` is the character x), up to the first metacharacter."""
    if not pattern.startswith("^"):
        return None
    out: list[str] = []
    i = 1
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern) and not pattern[i + 1].isalnum():
            out.append(pattern[i + 1])
            i += 2
            continue
        if ch in ".^$*+?{}[]()|\\":
            break
        out.append(ch)
        i += 1
    # A quantifier applies to the character before it: that one is not a sure prefix.
    if i < len(pattern) and pattern[i] in "*?{" and out:
        out.pop()
    return "".join(out)


def span(ops: Doc) -> Doc | None:
    """Range operators on strings as `{$gte: a, $lt: b}` covering the same strings."""
    out: Doc = {}
    for op, bound in ops.items():
        if op not in _CMP or not isinstance(bound, str):
            return None
        if op == "$gte":
            lo = bound
        elif op == "$gt":
            lo = bound + NUL
        elif op == "$lt":
            out["$lt"] = min(out.get("$lt", bound), bound)
            continue
        else:
            hi = bound + NUL
            out["$lt"] = min(out.get("$lt", hi), hi)
            continue
        out["$gte"] = max(out.get("$gte", lo), lo)
    return out or None


@dataclass(frozen=True)
class Clause:
    """One top-level `field: condition` of a filter."""

    field: str
    cond: Any

    def as_filter(self) -> Doc:
        return {self.field: self.cond}

    def loose(self) -> Doc | None:
        """The clause as a plain range SecantusDB bounds an index scan by (a superset of
        its matches), or None when it is not a range over a key array."""
        if self.field not in RANGE_FIELDS or not isinstance(self.cond, dict):
            return None
        if set(self.cond) == {"$elemMatch"} and isinstance(self.cond["$elemMatch"], dict):
            r = span(self.cond["$elemMatch"])
            return {self.field: r} if r else None
        if set(self.cond) == {"$regex"} and isinstance(self.cond["$regex"], str):
            prefix = literal_prefix(self.cond["$regex"])
            top = _successor(prefix) if prefix else None
            return {self.field: {"$gte": prefix, "$lt": top}} if top else None
        return None

    def point(self) -> bool:
        """An equality, or a short `$in` of strings, on a field SecantusDB looks up key by
        key (`_id` point lookups, `comp`, `ix.k`)."""
        if self.field not in POINT_FIELDS:
            return False
        c = self.cond
        if isinstance(c, str):
            return True
        return (
            isinstance(c, dict)
            and set(c) == {"$in"}
            and isinstance(c["$in"], list)
            and 0 < len(c["$in"]) <= POINT_IN_MAX
            and all(isinstance(v, str) for v in c["$in"])
        )

    def checker(self) -> Callable[[Doc], bool] | None:
        """The clause evaluated on a document as MongoDB does, or None when it is not one of
        the forms re-checked here."""
        f, c = self.field, self.cond
        if isinstance(c, str):
            return lambda d: c in values(d, f)
        if c is None:  # missing or null (a cursor past the rows without the sort value)
            return lambda d: not values(d, f) or None in values(d, f)
        if not isinstance(c, dict) or not c:
            return None
        if set(c) == {"$in"} and isinstance(c["$in"], list):
            wanted = set(c["$in"]) if all(isinstance(v, str) for v in c["$in"]) else None
            if wanted is None:
                return None
            return lambda d: any(v in wanted for v in values(d, f) if isinstance(v, str))
        if set(c) == {"$all"} and isinstance(c["$all"], list):
            if not c["$all"] or not all(isinstance(v, str) for v in c["$all"]):
                return None
            need = set(c["$all"])
            return lambda d: need <= {v for v in values(d, f) if isinstance(v, str)}
        if set(c) == {"$nin"} and isinstance(c["$nin"], list):
            if not all(isinstance(v, str) for v in c["$nin"]):
                return None
            banned = set(c["$nin"])
            return lambda d: not any(v in banned for v in values(d, f))
        if set(c) == {"$elemMatch"} and isinstance(c["$elemMatch"], dict):
            ops = c["$elemMatch"]
            if not ops or any(op not in _CMP or not isinstance(b, str) for op, b in ops.items()):
                return None
            tests = [(_CMP[op], b) for op, b in ops.items()]
            return lambda d: any(
                isinstance(v, str) and all(t(v, b) for t, b in tests) for v in values(d, f)
            )
        if set(c) == {"$size"} and type(c["$size"]) is int and "." not in f:
            # A top-level array of that length (the policy's `comp: {$size: 0}`: in no
            # patient compartment); anything else, or no field, does not match.
            n = c["$size"]
            return lambda d: isinstance(d.get(f), list) and len(d[f]) == n
        if set(c) == {"$regex"} and isinstance(c["$regex"], str):
            rx = re.compile(c["$regex"])
            return lambda d: any(isinstance(v, str) and rx.search(v) for v in values(d, f))
        if set(c) == {"$not"} and isinstance(c["$not"], dict) and c["$not"]:
            # MongoDB's `$not`: every document the inner range does not match, those
            # without the field included (a result's release instant `ak.r`: release.py).
            if not all(op in _CMP for op in c["$not"]):
                return None
            inner = Clause(f, c["$not"]).checker()
            if inner is None:
                return None
            return lambda d: not inner(d)
        if all(op in _CMP for op in c):
            # A plain range on an array: each bound met by some element (maybe another one).
            tests = [(_CMP[op], b) for op, b in c.items()]
            return lambda d: all(
                any(_comparable(v, b) and t(v, b) for v in values(d, f)) for t, b in tests
            )
        return None


@dataclass(frozen=True)
class Branch:
    """The clauses of one alternative of a top-level `$or`."""

    clauses: tuple[Clause, ...]


@dataclass(frozen=True)
class Conjunction:
    """A filter as the AND of top-level clauses and at most the `$or`s among them."""

    clauses: tuple[Clause, ...]
    ors: tuple[tuple[Branch, ...], ...]

    @property
    def rt(self) -> str | None:
        rts = [c.cond for c in self.clauses if c.field == "rt"]
        return rts[0] if len(rts) == 1 and isinstance(rts[0], str) else None


def _parts(filt: Doc) -> list[Doc] | None:
    out: list[Doc] = []
    for k, v in filt.items():
        if k == "$and":
            if not isinstance(v, list) or not all(isinstance(x, dict) for x in v):
                return None
            for x in v:
                sub = _parts(x)
                if sub is None:
                    return None
                out += sub
        elif k == "$or" or not k.startswith("$"):
            out.append({k: v})
        else:
            return None
    return out


def conjunction(filt: Doc) -> Conjunction | None:
    """`filt` as a flat conjunction and its top-level `$or`s, each in disjunctive normal
    form (a cursor boundary nests `$or`s); None for a shape this module leaves alone."""
    parts = _parts(filt)
    if parts is None:
        return None
    clauses: list[Clause] = []
    ors: list[tuple[Branch, ...]] = []
    for p in parts:
        ((k, v),) = p.items()
        if k != "$or":
            clauses.append(Clause(k, v))
            continue
        branches = _disjuncts(v)
        if branches is None:
            return None
        ors.append(tuple(Branch(b) for b in branches))
    return Conjunction(tuple(clauses), tuple(ors))


def _disjuncts(alts: Any) -> list[tuple[Clause, ...]] | None:
    """The alternatives of an `$or` as flat conjunctions (nested `$or`s distributed)."""
    if not isinstance(alts, list) or not alts:
        return None
    out: list[tuple[Clause, ...]] = []
    for alt in alts:
        sub = conjunction(alt) if isinstance(alt, dict) else None
        if sub is None:
            return None
        expanded = [sub.clauses]
        for o in sub.ors:
            expanded = [e + b.clauses for e in expanded for b in o]
        out += expanded
        if len(out) > OR_MAX:
            return None
    return out


def build(clauses: list[Clause], ids: list[str] | None = None) -> Doc:
    """A flat filter of `clauses` (`_id: {$in: ids}` first), `$and` where a field repeats."""
    first: list[Clause] = [Clause("_id", {"$in": ids})] if ids is not None else []
    flat: Doc = {}
    extra: list[Doc] = []
    for c in first + clauses:
        if c.field in flat:
            extra.append(c.as_filter())
        else:
            flat[c.field] = c.cond
    return {"$and": [flat, *extra]} if extra else flat


def point_first(filt: Doc) -> Doc:
    """The filter with its most selective point clause first: `_id`, then the patient
    compartment, then one key. SecantusDB looks up the FIRST clause an index answers alone
    (docs/database.md, step 5); our filters start with `rt`, every resource of the type."""
    first = next((f for f in POINT_FIELDS if f in filt and Clause(f, filt[f]).point()), None)
    if first is None or next(iter(filt)) == first:
        return filt
    return {first: filt[first], **{k: v for k, v in filt.items() if k != first}}


def _bounded(filt: Doc) -> bool:
    """Already looked up by a point clause (it is first after `point_first`)."""
    if not filt:
        return True
    k, v = next(iter(filt.items()))
    return Clause(k, v).point()


def ordered(clauses: list[Clause]) -> list[Clause]:
    """Range clauses by likely selectivity: string keys (a name, a display, a uri prefix)
    before dates and quantities, a `:contains` regex (the parameter's whole key range)
    last."""

    def rank(c: Clause) -> int:
        if isinstance(c.cond, dict) and "$regex" in c.cond:
            return 3
        return 0 if c.field == "ix.s" else 1

    return sorted(clauses, key=rank)


@dataclass(frozen=True)
class Resolution:
    """One indexed lookup whose rows, re-checked in memory against the whole conjunction
    (`test`), are exactly the filter's matches."""

    lookup: Doc
    fields: tuple[str, ...]  # what the re-check reads
    test: Callable[[Doc], bool]


def resolution(q: Conjunction) -> Resolution | None:
    """None unless every clause can be re-checked and one can be looked up on an index: a
    point clause as is (exact), else the best range loosened. With `$or`s (a proxy's
    access rules), only a point clause beside them (the policy's `comp: {$in}` superset)
    is looked up, and each row is re-checked against the branches too."""
    own = [c for c in q.clauses if c.field != "rt"]
    tested = _tested(q)
    if tested is None:
        return None
    checks, named = tested
    # The narrowest point clause: a proxy's `$or` branch holds its own compartment beside
    # the policy's superset `comp: {$in: [every compartment]}` (access/rules.py).
    lead = min((c for c in own if c.point()), key=_width, default=None)
    every = next(
        (c for c in own if c.field == "ix.k" and isinstance(c.cond, dict) and "$all" in c.cond),
        None,
    )
    if lead is not None:
        sent = lead.as_filter()
    elif q.ors:
        return None  # the `$or` runs branch by branch (`_union`)
    elif every is not None:
        sent = {"ix.k": every.cond["$all"][0]}  # one of the keys required, exactly
    else:
        ranged = [c for c in own if c.loose() is not None]
        loose = ordered(ranged)[0].loose() if ranged else None
        if loose is None or q.rt is None:
            return None
        sent = loose
    lookup = {"rt": q.rt, **sent} if q.rt is not None else sent
    return Resolution(lookup, tuple(f for f in named if f != "_id"), checks)


def _tested(q: Conjunction) -> tuple[Callable[[Doc], bool], tuple[str, ...]] | None:
    """The whole conjunction, `$or`s included, as one test of a document, and the fields
    it reads; None when a clause is not one re-checked here."""
    tests = [c.checker() for c in q.clauses]
    alts = [[[c.checker() for c in b.clauses] for b in o] for o in q.ors]
    if any(t is None for t in tests) or any(t is None for o in alts for b in o for t in b):
        return None
    ands = [t for t in tests if t is not None]
    ors = [[[t for t in b if t is not None] for b in o] for o in alts]
    named = {c.field for c in q.clauses} | {c.field for o in q.ors for b in o for c in b.clauses}

    def test(d: Doc) -> bool:
        return all(t(d) for t in ands) and all(any(all(t(d) for t in b) for b in o) for o in ors)

    return test, tuple(sorted(named))


def _width(c: Clause) -> int:
    """How many keys a point clause looks up."""
    return len(c.cond["$in"]) if isinstance(c.cond, dict) else 1


Memo = dict[str, list[Doc]]


async def _matches(
    store: _Store, q: Conjunction, r: Resolution, sort: Sort | None, memo: Memo | None
) -> list[Doc] | None:
    """The matching rows (`_id`, the re-checked fields, the sort fields); None past
    RESOLVE_MAX rows from one lookup. `memo` keeps them for the same request's total."""
    extra = [f for f, _ in sort or [] if f != "_id"]
    key = repr(q)
    if memo is not None and key in memo and all(f in r.fields for f in extra):
        return memo[key]
    proj = {"_id": 1, **dict.fromkeys(sorted({*r.fields, *extra}), 1)}
    rows = await store.find(r.lookup, proj, limit=RESOLVE_MAX + 1)
    if len(rows) > RESOLVE_MAX:
        return None
    out = [d for d in rows if r.test(d)]
    if memo is not None:
        memo[key] = out
    return out


# BSON's comparison order of the types our sort fields hold (null and missing first).
_BRACKET: tuple[tuple[type, int], ...] = ((bool, 8), (int, 1), (float, 1), (str, 2), (datetime, 9))


def _sort_value(v: Any) -> tuple[int, Any] | None:
    if v is None:
        return (0, 0)
    for t, rank in _BRACKET:
        if isinstance(v, t):
            return (rank, v)
    return None  # an array or a document: not ordered here


def in_sort_order(rows: list[Doc], sort: Sort) -> list[Doc] | None:
    """`rows` in MongoDB's order for `sort` (scalar sort fields only), else None."""
    keyed: list[tuple[list[tuple[int, Any]], Doc]] = []
    for d in rows:
        key = []
        for f, _ in sort:
            vs = values(d, f)
            sv = _sort_value(vs[0] if vs else None)
            if sv is None or len(vs) > 1:
                return None
            key.append(sv)
        keyed.append((key, d))
    for i in reversed(range(len(sort))):
        keyed.sort(key=lambda kd: kd[0][i], reverse=sort[i][1] < 0)
    return [d for _, d in keyed]


def _narrowed(q: Conjunction, ids: list[str]) -> Doc:
    """`_id: {$in: ids}` AND the clauses, flat: the first clause on each field (the access
    policy's come before the criteria, execute.base_filter) stays for the database to apply
    again; a later one on the same field, and an `_id` range (a cursor's boundary), were
    re-checked on the ids and are left out, so the query stays point lookups."""
    keep: list[Clause] = []
    seen = {"_id"}
    for c in q.clauses:
        if c.field not in seen:
            keep.append(c)
            seen.add(c.field)
    return build(keep, ids)


def whole_range(q: Conjunction) -> Clause | None:
    """The range clause of `{rt, field: {$elemMatch: R}}` alone, which SecantusDB serves
    whole from `(rt, field, _id)` once loosened."""
    if q.ors or q.rt is None or len(q.clauses) != 2:
        return None
    others = [c for c in q.clauses if c.field != "rt"]
    if len(others) != 1 or others[0].loose() is None:
        return None
    other = others[0]
    if not (isinstance(other.cond, dict) and "$elemMatch" in other.cond):
        return None
    return other


def recheck(filt: Doc) -> tuple[Callable[[Doc], bool], tuple[str, ...]] | None:
    """`filt` as a test of one document in memory, and the fields the test reads; None when
    a clause is not one re-checked here. For a read by `_id` (storage/store.py): SecantusDB
    scans the collection for `{_id, $and: [policy]}` (a top-level operator), so the
    document is fetched by `_id` alone and the policy's filter tested on it here."""
    q = conjunction(filt)
    return _tested(q) if q is not None else None


def _covers(projection: Doc | None, field: str) -> bool:
    if projection is None or field == "_id":
        return True
    return any(field == p or field.startswith(p + ".") for p in projection)


def _strip(doc: Doc, field: str) -> None:
    parts = field.split(".")
    cur: Any = doc
    for p in parts[:-1]:
        cur = cur.get(p) if isinstance(cur, dict) else None
    if isinstance(cur, dict):
        cur.pop(parts[-1], None)


async def find(
    store: _Store,
    filt: Doc,
    projection: Doc | None,
    *,
    sort: Sort | None = None,
    limit: int = 0,
    memo: Memo | None = None,
) -> list[Doc]:
    """The rows of `filt` as MongoDB would answer them, through SecantusDB's indexes."""
    filt = point_first(filt)
    q = conjunction(filt)
    if q is None:
        return await store.find(filt, projection, sort=sort, limit=limit)
    if q.ors:
        r = resolution(q)
        rows = await _resolved(store, q, r, projection, sort, limit, memo) if r else None
        if rows is None:
            rows = await _union(store, q, projection, sort, limit, memo)
        if rows is not None:
            return rows
        return await store.find(filt, projection, sort=sort, limit=limit)
    if "$and" not in filt and _bounded(filt):
        return await store.find(filt, projection, sort=sort, limit=limit)
    clause = whole_range(q)
    if clause is not None:
        loose = clause.loose()
        test = clause.checker()
        assert loose is not None and test is not None
        added = not _covers(projection, clause.field)
        proj = {**projection, clause.field: 1} if added and projection is not None else projection
        rows = await store.find({"rt": q.rt, **loose}, proj, sort=sort, limit=limit)
        kept = [d for d in rows if test(d)]
        if len(kept) == len(rows) or not limit or len(rows) < limit:
            if added:
                for d in kept:
                    _strip(d, clause.field)
            return kept
    r = resolution(q)
    rows = await _resolved(store, q, r, projection, sort, limit, memo) if r else None
    if rows is None:
        return await store.find(filt, projection, sort=sort, limit=limit)
    return rows


async def _resolved(
    store: _Store,
    q: Conjunction,
    r: Resolution,
    projection: Doc | None,
    sort: Sort | None,
    limit: int,
    memo: Memo | None,
) -> list[Doc] | None:
    """The page from the lookup's re-checked rows: their ids fetched with the clauses
    (not the `$or`s, re-checked in memory: SecantusDB scans for a top-level `$or`); None
    past RESOLVE_MAX rows or NARROW_MAX ids, or for rows not ordered here."""
    found = await _matches(store, q, r, sort, memo)
    page = in_sort_order(found, sort) if found is not None and sort else found
    if page is not None and limit:
        page = page[:limit]
    if page is None or len(page) > NARROW_MAX:
        return None
    return await store.find(
        _narrowed(q, [d["_id"] for d in page]), projection, sort=sort, limit=limit
    )


def branch_filters(q: Conjunction) -> list[Doc] | None:
    """A filter with top-level `$or`s as one flat filter per combination of their branches
    (the rest AND the branches): SecantusDB scans on any top-level `$or`, and serves each of
    these."""
    combos: list[tuple[Clause, ...]] = [()]
    for o in q.ors:
        combos = [c + b.clauses for c in combos for b in o]
        if len(combos) > OR_MAX:
            return None
    return [build([*q.clauses, *c]) for c in combos]


async def _union(
    store: _Store,
    q: Conjunction,
    projection: Doc | None,
    sort: Sort | None,
    limit: int,
    memo: Memo | None,
) -> list[Doc] | None:
    """The `$or` as the union of its branches, each with the whole rest of the filter (the
    access policy with it), sorted and limited by the database, merged in MongoDB's order:
    the first `limit` rows of each branch hold the first `limit` of the union."""
    branches = branch_filters(q)
    if branches is None:
        return None
    added = [f for f, _ in sort or [] if not _covers(projection, f)]
    proj = {**projection, **dict.fromkeys(added, 1)} if projection is not None else None
    rows: dict[str, Doc] = {}
    for bf in branches:
        for d in await find(store, bf, proj, sort=sort, limit=limit, memo=memo):
            rows.setdefault(d["_id"], d)
    out: list[Doc] | None = list(rows.values())
    if sort and out is not None:
        out = in_sort_order(out, sort)
    if out is None:
        return None
    if limit:
        out = out[:limit]
    for d in out:
        for f in added:
            _strip(d, f)
    return out


async def count(store: _Store, filt: Doc, memo: Memo | None = None) -> int:
    """The number of rows of `filt`, as `find` runs it: the re-checked matches counted, or
    the distinct ids of the branches of an `$or`."""
    filt = point_first(filt)
    q = conjunction(filt)
    r = resolution(q) if q is not None and q.ors else None
    if q is not None and r is not None:
        matched = await _matches(store, q, r, None, memo)
        if matched is not None:
            return len(matched)
    if q is not None and q.ors:
        branches = branch_filters(q)
        if branches is None:
            return await store.count(filt)
        ids: set[str] = set()
        for bf in branches:
            ids.update(d["_id"] for d in await find(store, bf, {"_id": 1}, memo=memo))
        return len(ids)
    if q is None or ("$and" not in filt and _bounded(filt)):
        return await store.count(filt)
    r = resolution(q)
    rows = await _matches(store, q, r, None, memo) if r is not None else None
    if rows is None:
        return await store.count(filt)
    return len(rows)


def plan_queries(filt: Doc) -> list[Doc]:
    """The queries `find` sends for `filt` when nothing goes past its bounds, for tests:
    per `$or` branch, the whole-range query, or the lookup then the narrowed filter (with a
    placeholder id), or the filter itself."""
    filt = point_first(filt)
    q = conjunction(filt)
    if q is None:
        return [filt]
    if q.ors:
        r = resolution(q)
        if r is not None:
            return [r.lookup, _narrowed(q, ["?"])]
        branches = branch_filters(q)
        return [x for bf in branches for x in plan_queries(bf)] if branches else [filt]
    if "$and" not in filt and _bounded(filt):
        return [filt]
    clause = whole_range(q)
    if clause is not None:
        loose = clause.loose()
        assert loose is not None
        return [{"rt": q.rt, **loose}]
    r = resolution(q)
    if r is None:
        return [filt]
    return [r.lookup, _narrowed(q, ["?"])]
