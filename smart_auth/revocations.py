"""The revocation feed: how every server process learns, within a second, that a token died.

Access tokens are checked from a per-process cache (``smart_auth.token_cache``), so the
database alone no longer stops a revoked token everywhere. Every place that makes a token
unusable (RFC 7009 revocation, a grant revoked on refresh or code replay, an account
lockout, a disabled client) first marks the records in MongoDB, then appends what it
revoked to ONE document, ``auth_meta`` ``{_id: "revocations"}``: a counter ``seq`` and the
last :data:`KEEP` events, written by one atomic update (``$inc`` + ``$push`` with ``$slice``),
so the ``i``-th event from the end is number ``seq - i``. Each process polls that document
by ``_id`` (:class:`RevocationWatch`, a sub-second interval) and drops the matching cache
entries; if it fell more than :data:`KEEP` events behind, it drops them all.

Polling, not a change stream: change streams need a replica set, and one ``_id`` lookup a
few times a second costs the database nothing measurable (docs/smart.md, "Token cache").
The records are written before the feed, so a process that re-verifies after seeing an
event always finds the token revoked.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from smart_auth.store import AuthStore
    from smart_auth.token_cache import TokenCache

FEED_ID = "revocations"
# Events kept in the feed document: a process more than this many behind drops its cache.
KEEP = 200
Kind = Literal["token", "grant", "client", "account"]
log = logging.getLogger("smart_auth")


@dataclass(frozen=True)
class Revocation:
    """What stopped being valid: a token (its ``jti``), a grant, a client or an account
    (its normalised username). Every access token of it is refused from now on."""

    kind: Kind
    key: str

    def to_doc(self) -> dict[str, str]:
        return {"kind": self.kind, "key": self.key}


def publish(store: AuthStore, events: list[Revocation]) -> None:
    """Append events to the feed (after the records were marked revoked)."""
    if not events:
        return
    store.meta.update_one(
        {"_id": FEED_ID},
        {
            "$inc": {"seq": len(events)},
            "$push": {"recent": {"$each": [e.to_doc() for e in events], "$slice": -KEEP}},
        },
        upsert=True,
    )


def current_seq(store: AuthStore) -> int:
    doc = store.meta.find_one({"_id": FEED_ID}, {"seq": 1})
    return int(doc.get("seq", 0)) if doc else 0


def read_since(store: AuthStore, seen: int | None) -> tuple[int, list[Revocation] | None]:
    """The feed's position and the events after ``seen``; ``None`` for the events when they
    are no longer all in the document (or ``seen`` is unknown): drop everything then."""
    seq = current_seq(store)
    if seq == seen:
        return seq, []
    doc = store.meta.find_one({"_id": FEED_ID}) or {}
    seq = int(doc.get("seq", 0))
    recent = list(doc.get("recent", []))
    missed = seq - seen if seen is not None else -1
    if missed < 0 or missed > len(recent):
        return seq, None
    tail = recent[len(recent) - missed :] if missed else []
    return seq, [Revocation(e["kind"], e["key"]) for e in tail]


class RevocationWatch:
    """A daemon thread that polls the feed and applies it to one process's token cache.

    Each poll that succeeds tells the cache it is current as of the poll's start; the cache
    serves nothing once that is older than its bound (fail closed when the database stops
    answering). The thread uses the authorization server's synchronous client."""

    def __init__(
        self,
        store: AuthStore,
        cache: TokenCache,
        interval_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.cache = cache
        self.interval_s = interval_s
        self.clock = clock
        self.seen: int | None = None
        self.polls = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def poll(self) -> None:
        """One round: read the feed, drop what it names, confirm the cache current."""
        started = self.clock()
        seq, events = read_since(self.store, self.seen)
        if events is None:
            self.cache.clear()
        elif events:
            self.cache.drop(events)
        self.seen = seq
        self.polls += 1
        self.cache.confirm(started)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._run, name="smart-auth-revocations", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                self.poll()
                if self._failing:
                    log.info("revocation feed readable again; token cache in use")
                self._failing = False
            except Exception as exc:  # the cache goes stale and stops serving: fail closed
                if not self._failing:
                    log.warning("revocation feed unreadable, token cache paused: %s", exc)
                self._failing = True
            if self._stop.wait(self.interval_s):
                return

    def stop(self, timeout_s: float = 1.0) -> None:
        """Ask the thread to end; a poll stuck on a hung database is not waited for (the
        thread is a daemon, and the stop has its own bound: docs/rest.md, "Stopping")."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout_s)
