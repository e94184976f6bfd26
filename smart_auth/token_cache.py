"""Verified access tokens of this process, keyed by the exact token string.

A hit returns the very :class:`AuthContext` the full check built (signature, claims, token
record: RFC 9068 section 4), with no signature check and no database round trip, so a token
can never do more from the cache than it could when it was verified. An entry lives until
the token's own ``exp`` at most, and the least recently used entry goes first when the cache
is full.

Revocation reaches the cache through the feed (``smart_auth.revocations``): the process that
revokes drops its entries at once, the others on their next poll. Two rules keep it safe:

- **Fail closed.** The cache answers only while its last successful poll *started* less
  than ``stale_after_s`` ago; a revocation published before that poll started was applied
  by it. When the database stops answering, hits stop within that bound and every request
  takes the full check (which needs the database).
- **No stale insert.** A check that read the token record before a revocation may finish
  after the revocation was applied; it inserts only if no drop happened since it began
  (``generation``), so it cannot put a revoked token back.

A bounded ``OrderedDict`` rather than a library cache: entries must also be dropped by
grant, client or account, which cachetools' caches do not offer, and the whole is a few
lines under one lock (hits on the event loop, inserts in worker threads, drops in the feed
thread).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from smart_auth.models import AuthContext
from smart_auth.revocations import Revocation


@dataclass(frozen=True)
class Entry:
    context: AuthContext
    username: str | None  # the account behind a user token (lockout drops by it)
    expires: float  # the token's ``exp`` (seconds since the epoch)

    def matches(self, event: Revocation) -> bool:
        ctx = self.context
        if event.kind == "token":
            return ctx.token_id == event.key
        if event.kind == "grant":
            return ctx.grant_id == event.key
        if event.kind == "client":
            return ctx.client_id == event.key
        return self.username is not None and self.username == event.key


class TokenCache:
    def __init__(
        self,
        size: int,
        *,
        stale_after_s: float,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if size < 1:
            raise ValueError("a token cache holds at least one entry")
        self.size = size
        self.stale_after_s = stale_after_s
        self.clock = clock
        self.wall = wall
        self.generation = 0
        self.hits = 0
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._fresh_until = float("-inf")  # nothing is served before the first poll

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def fresh(self) -> bool:
        return self.clock() < self._fresh_until

    def get(self, token: str) -> AuthContext | None:
        with self._lock:
            if self.clock() >= self._fresh_until:
                return None
            entry = self._entries.get(token)
            if entry is None:
                return None
            if self.wall() >= entry.expires:
                del self._entries[token]
                return None
            self._entries.move_to_end(token)
            self.hits += 1
            return entry.context

    def put(self, token: str, entry: Entry, generation: int) -> None:
        """Keep a verified token; ``generation`` is :attr:`generation` read before the check
        began (an insert racing a revocation is skipped)."""
        with self._lock:
            if generation != self.generation or self.wall() >= entry.expires:
                return
            self._entries[token] = entry
            self._entries.move_to_end(token)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def drop(self, events: Iterable[Revocation]) -> None:
        wanted = list(events)
        with self._lock:
            self.generation += 1
            doomed = [t for t, e in self._entries.items() if any(e.matches(w) for w in wanted)]
            for token in doomed:
                del self._entries[token]

    def clear(self) -> None:
        with self._lock:
            self.generation += 1
            self._entries.clear()

    def confirm(self, poll_started: float) -> None:
        """The feed was read completely by a poll that started at ``poll_started``."""
        with self._lock:
            self._fresh_until = max(self._fresh_until, poll_started + self.stale_after_s)
