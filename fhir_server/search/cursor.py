"""Keyset paging cursors (https://hl7.org/fhir/R4/http.html#paging).

A cursor names the sort values of the last (or first) row of a page, never an offset, so the
next page stays right while resources are added or deleted, and a deep page costs the same as
the first. The cursor also records the sort it was made for: a cursor reused under another
`_sort` is rejected rather than silently misread.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Any

from fhir_server.errors import BadRequest
from fhir_server.search.query import NOTHING

Sort = list[tuple[str, int]]


def _enc(v: Any) -> Any:
    return {"$d": v.isoformat()} if isinstance(v, datetime) else v


def _dec(v: Any) -> Any:
    if isinstance(v, dict):
        if set(v) != {"$d"} or not isinstance(v["$d"], str):
            raise ValueError("bad cursor value")
        return datetime.fromisoformat(v["$d"])
    if v is not None and not isinstance(v, (str, int, float)):
        raise ValueError("bad cursor value")
    return v


def field_value(doc: dict[str, Any], field: str) -> Any:
    cur: Any = doc
    for part in field.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def make(doc: dict[str, Any], sort: Sort, direction: str) -> str:
    """Cursor for the rows after (`a`) or before (`b`) `doc` in `sort` order."""
    body = {
        "d": direction,
        "s": [f for f, _ in sort],
        "v": [_enc(field_value(doc, f)) for f, _ in sort],
    }
    raw = json.dumps(body, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def read(cursor: str, sort: Sort) -> tuple[str, list[Any]]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        body = json.loads(raw)
        direction, fields, values = body["d"], body["s"], [_dec(v) for v in body["v"]]
    except (ValueError, KeyError, TypeError, binascii.Error) as e:
        raise BadRequest("Invalid paging cursor") from e
    if direction not in ("a", "b") or fields != [f for f, _ in sort] or len(values) != len(sort):
        raise BadRequest("The paging cursor does not belong to this search")
    return direction, values


def _beyond(field: str, value: Any, order: int) -> dict[str, Any]:
    # MongoDB orders a missing value before any other: ascending it comes first.
    if order == 1:
        return {field: {"$ne": None}} if value is None else {field: {"$gt": value}}
    if value is None:
        return NOTHING
    return {"$or": [{field: {"$lt": value}}, {field: None}]}


def boundary(sort: Sort, values: list[Any]) -> dict[str, Any]:
    """Rows strictly after `values` in `sort` order (lexicographic over the keys)."""
    branches = []
    for i, (field, order) in enumerate(sort):
        eqs = [{f: v} for (f, _), v in zip(sort[:i], values[:i], strict=True)]
        branches.append(eqs + [_beyond(field, values[i], order)])
    ors = [b[0] if len(b) == 1 else {"$and": b} for b in branches]
    return ors[0] if len(ors) == 1 else {"$or": ors}
