"""Which database answers: MongoDB, or the embedded SecantusDB, whose planner needs help.

SecantusDB 0.7.0b3 looks a query up on an index only when the filter has no top-level
operator and one of its fields is indexed (docs/database.md, "SecantusDB's query planner");
MongoDB plans every filter itself. The few places that shape a query for SecantusDB ask here,
once per client (`buildInfo` names `secantusVersion` on SecantusDB only).
"""

from __future__ import annotations

from typing import Any

# Per client (`id(db.client)`): True on MongoDB, False on SecantusDB.
DIALECT: dict[int, bool] = {}


async def uses_elem_match(db: Any) -> bool:
    """True on MongoDB, False on SecantusDB (see search/query.py): asked once per client."""
    key = id(db.client)
    if key not in DIALECT:
        info = await db.client.admin.command("buildInfo")
        DIALECT[key] = "secantusVersion" not in info
    return DIALECT[key]
