"""Epochs of the data an access policy is built from, so the inputs can be cached exactly.

A Patient user's policy (family.py) reads Patients, RelatedPersons and Consents; a
clinician's (care_team.py) PractitionerRoles and CareTeams. Reading them on every request
cost 3-4 queries (docs/access.md, "Policy inputs cached per token subject"). Instead:

- every write of one of `POLICY_TYPES` (storage/store.py: create, update, delete, the bulk
  writes of a transaction, loaders, re-indexing) increments, in the same transaction, the
  epoch document of each patient compartment the resource was in before or is in after the
  write (`Patient/<id>`), and of `CARE_TEAMS` for the clinicians' types, which no
  compartment bounds;
- a request reads the epochs of the keys its policy depends on with ONE point lookup
  (`_id: {$in: keys}`) and uses the cached inputs only when every epoch is the one they were
  read under; otherwise it reads the data again and caches it under the epochs it read
  BEFORE the data. So a write committed before the request's epoch read is seen (the epoch
  differs), and an entry built by an in-flight request from data older than a write carries
  the older epoch and is never used after it: revoking a grant takes effect on the next
  request in every server process, as without the cache.

Why the compartment keys suffice for a Patient user: its policy reads only its own and its
candidates' Patients (in their own compartments), the RelatedPersons linked from its own
Patient (used only for the candidate in whose compartment they are) and the Consents and
RelatedPersons whose `patient` is a candidate (in that candidate's compartment). Ages and
periods are evaluated on the cached documents on each request's day, never cached.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession

Doc = dict[str, Any]
COLLECTION = "policy_epochs"
# The types family.py reads (per patient compartment) and care_team.py reads (global).
FAMILY_TYPES = frozenset({"Patient", "RelatedPerson", "Consent"})
CARE_TEAM_TYPES = frozenset({"CareTeam", "PractitionerRole"})
POLICY_TYPES = FAMILY_TYPES | CARE_TEAM_TYPES
CARE_TEAMS = "care-teams"  # the one epoch of the clinicians' types
PATIENT = "Patient/"


def written_keys(rt: str, *comps: Iterable[str] | None) -> list[str]:
    """The epoch keys a write of `rt` bumps: the patient compartments of its versions
    before and after (`comps`), or `CARE_TEAMS`; none for a type no policy reads."""
    if rt in CARE_TEAM_TYPES:
        return [CARE_TEAMS]
    if rt not in FAMILY_TYPES:
        return []
    return sorted({c for cs in comps for c in cs or () if c.startswith(PATIENT)})


async def bump(db: Any, keys: Iterable[str], session: AsyncClientSession | None) -> None:
    """Increment the epochs of `keys` (created at 1), in the writer's session."""
    ops = [UpdateOne({"_id": k}, {"$inc": {"n": 1}}, upsert=True) for k in sorted(set(keys))]
    if ops:
        await db[COLLECTION].bulk_write(ops, ordered=True, session=session)


Snapshot = tuple[tuple[str, int], ...]


async def snapshot(db: Any, keys: Iterable[str]) -> Snapshot:
    """The current epoch of each key (0 for one never written), one point lookup."""
    wanted = sorted(set(keys))
    found = {
        d["_id"]: int(d.get("n", 0)) async for d in db[COLLECTION].find({"_id": {"$in": wanted}})
    }
    return tuple((k, found.get(k, 0)) for k in wanted)


@dataclass
class Entry:
    epochs: Snapshot
    reads: dict[str, list[Doc]] = field(default_factory=dict)


class InputCache:
    """The documents policy builds read, per token subject, each entry valid only under the
    epochs it was read with (module docstring). Bounded: least recently used out first."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[Any, ...], Entry] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, subject: tuple[Any, ...], epochs: Snapshot) -> Entry | None:
        entry = self._entries.get(subject)
        if entry is None or entry.epochs != epochs:
            return None
        self._entries.move_to_end(subject)
        return entry

    def put(self, subject: tuple[Any, ...], entry: Entry) -> None:
        """Keep `entry`, unless the one held was read under later epochs (an in-flight
        build that read before a write finishes after one that read after it)."""
        if self.max_entries <= 0:
            return
        held = self._entries.get(subject)
        if held is not None and _newer(held.epochs, entry.epochs):
            return
        self._entries[subject] = entry
        self._entries.move_to_end(subject)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


class Reads:
    """`resources_matching` for one policy build: answered from a valid cache entry, or
    from the store and recorded for the entry `commit` stores. Only queries on the types
    whose writes bump the epochs are allowed (anything else could not be invalidated)."""

    def __init__(
        self,
        store: Any,
        cache: InputCache | None,
        subject: tuple[Any, ...],
        epochs: Snapshot | None,
        types: frozenset[str],
    ) -> None:
        self.store = store
        self.cache = cache
        self.subject = subject
        self.types = types
        self.hit = cache.get(subject, epochs) if cache is not None and epochs is not None else None
        self.fresh = Entry(epochs) if epochs is not None else None

    async def resources_matching(self, filt: Doc) -> list[Doc]:
        _check_types(filt, self.types)
        key = repr(filt)
        if self.hit is not None and key in self.hit.reads:
            self.cache.hits += 1  # type: ignore[union-attr]
            return self.hit.reads[key]
        if self.cache is not None:
            self.cache.misses += 1
        docs = await self.store.resources_matching(filt)
        if self.fresh is not None:
            self.fresh.reads[key] = docs
        return docs

    def commit(self) -> None:
        """Keep what this build read (a build answered whole from the cache keeps its entry)."""
        if self.cache is None or self.fresh is None or not self.fresh.reads:
            return
        if self.hit is not None and set(self.fresh.reads) <= set(self.hit.reads):
            return
        merged = Entry(
            self.fresh.epochs, {**(self.hit.reads if self.hit else {}), **self.fresh.reads}
        )
        self.cache.put(self.subject, merged)


def _newer(a: Snapshot, b: Snapshot) -> bool:
    """`a` is later than `b`: the same keys, none earlier, one later."""
    return (
        [k for k, _ in a] == [k for k, _ in b]
        and all(x >= y for (_, x), (_, y) in zip(a, b, strict=True))
        and a != b
    )


def _check_types(filt: Doc, types: frozenset[str]) -> None:
    """A policy query names its type (`rt`) or ids of it (`_id: {$in}`), one of `types`."""
    rt = filt.get("rt")
    if isinstance(rt, str):
        named = {rt}
    else:
        ids = filt.get("_id")
        values = ids.get("$in") if isinstance(ids, dict) else [ids]
        named = {str(v).split("/", 1)[0] for v in values or []}
    if not named or not named <= types:
        raise AssertionError(f"a policy query outside the epoch-tracked types: {sorted(named)}")
