"""Indexes of the `resources` collection for search (measurements in docs/search.md).

Every key array in `ix` gets one compound index prefixed by `rt` and suffixed by `_id`: the
type narrows, the key matches, and `_id` lets a keyset cursor (`_id > last`) and the default
sort stay inside the index. Two arrays never share an index (MongoDB refuses to index
parallel arrays). System-level searches (no `rt`) use `(ix.k, _id)` and `(lu, _id)`.
Nine indexes in all with storage's `(rt, lu)` and `(comp, rt, ix.o.date, _id)`, far below
MongoDB's 64.
"""

from __future__ import annotations

from pymongo import ASCENDING, IndexModel


def index_models() -> list[IndexModel]:
    a = ASCENDING
    return [
        IndexModel([("rt", a), ("lu", a)], name="rt_lu"),
        # Storage's, which also serves a patient's resources newest first (db/client.py).
        IndexModel([("comp", a), ("rt", a), ("ix.o.date", a), ("_id", a)], name="comp_rt_date"),
        IndexModel([("rt", a), ("_id", a)], name="rt_id"),
        IndexModel([("rt", a), ("ix.k", a), ("_id", a)], name="rt_ix_k"),
        IndexModel([("rt", a), ("ix.s", a), ("_id", a)], name="rt_ix_s"),
        IndexModel([("rt", a), ("ix.lo", a), ("_id", a)], name="rt_ix_lo"),
        IndexModel([("rt", a), ("ix.hi", a), ("_id", a)], name="rt_ix_hi"),
        IndexModel([("ix.k", a), ("_id", a)], name="ix_k"),
        IndexModel([("lu", a), ("_id", a)], name="lu_id"),
    ]
