"""smart_auth/token_cache.py: exact-string keys, expiry, fail closed, LRU bound, drops."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from smart_auth.models import AuthContext
from smart_auth.revocations import Revocation
from smart_auth.scopes import parse_scopes
from smart_auth.token_cache import Entry, TokenCache

BOUND = 0.9


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def context(n: int, *, grant: str = "g", client: str = "app") -> AuthContext:
    return AuthContext(
        subject=f"Patient/{n}",
        client_id=client,
        scopes=parse_scopes("patient/*.rs"),
        scope="patient/*.rs",
        token_id=f"jti-{n}",
        grant_id=grant,
        expires_at=datetime.fromtimestamp(5000, UTC),
        fhir_user=f"Patient/{n}",
    )


def entry(n: int, *, user: str | None = "u", exp: float = 5000.0, **kw: str) -> Entry:
    return Entry(context(n, **kw), user, exp)


def fresh_cache(size: int = 100) -> tuple[TokenCache, Clock, Clock]:
    mono, wall = Clock(), Clock(4000.0)
    cache = TokenCache(size, stale_after_s=BOUND, clock=mono, wall=wall)
    cache.confirm(mono.t)
    return cache, mono, wall


def test_a_hit_is_the_verified_context_and_only_for_the_exact_string() -> None:
    cache, _, _ = fresh_cache()
    ctx = entry(1)
    cache.put("aaa.bbb.ccc", ctx, cache.generation)
    assert cache.get("aaa.bbb.ccc") is ctx.context
    for other in ("aaa.bbb.cc", "aaa.bbb.ccc ", "AAA.BBB.CCC", "aaa.bbb.ccd", ""):
        assert cache.get(other) is None


def test_an_entry_ends_at_the_tokens_exp() -> None:
    cache, _, wall = fresh_cache()
    cache.put("t", entry(1, exp=4010.0), cache.generation)
    wall.t = 4009.99
    assert cache.get("t") is not None
    wall.t = 4010.0
    assert cache.get("t") is None
    assert len(cache) == 0  # and it is gone, not merely hidden
    cache.put("late", entry(2, exp=4000.0), cache.generation)  # already expired: not kept
    assert len(cache) == 0


def test_fail_closed_without_a_recent_complete_poll() -> None:
    mono, wall = Clock(), Clock(4000.0)
    cache = TokenCache(10, stale_after_s=BOUND, clock=mono, wall=wall)
    cache.put("t", entry(1), cache.generation)
    assert cache.get("t") is None  # never polled: nothing served
    cache.confirm(mono.t)
    assert cache.get("t") is not None
    mono.t += BOUND - 0.01
    assert cache.get("t") is not None
    mono.t += 0.01  # the last complete poll started BOUND ago: stop serving
    assert cache.get("t") is None
    cache.confirm(mono.t)
    assert cache.get("t") is not None


def test_least_recently_used_goes_first() -> None:
    cache, _, _ = fresh_cache(size=2)
    cache.put("a", entry(1), cache.generation)
    cache.put("b", entry(2), cache.generation)
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", entry(3), cache.generation)
    assert len(cache) == 2
    assert cache.get("b") is None
    assert cache.get("a") is not None and cache.get("c") is not None


@pytest.mark.parametrize(
    ("event", "gone"),
    [
        (Revocation("token", "jti-1"), {"t1"}),
        (Revocation("grant", "g2"), {"t2", "t3"}),
        (Revocation("client", "other"), {"t3"}),
        (Revocation("account", "alice"), {"t1", "t2"}),
        (Revocation("account", "nobody"), set()),
    ],
)
def test_drop_removes_what_the_event_names_and_nothing_else(
    event: Revocation, gone: set[str]
) -> None:
    cache, _, _ = fresh_cache()
    cache.put("t1", entry(1, user="alice", grant="g1"), cache.generation)
    cache.put("t2", entry(2, user="alice", grant="g2"), cache.generation)
    cache.put("t3", entry(3, user=None, grant="g2", client="other"), cache.generation)
    cache.drop([event])
    assert {t for t in ("t1", "t2", "t3") if cache.get(t) is None} == gone


def test_a_check_that_began_before_a_drop_is_not_kept() -> None:
    cache, _, _ = fresh_cache()
    began = cache.generation
    cache.drop([Revocation("token", "jti-1")])  # applied while the check ran
    cache.put("t", entry(1), began)
    assert cache.get("t") is None
    began = cache.generation
    cache.clear()
    cache.put("t", entry(1), began)
    assert cache.get("t") is None
    cache.put("t", entry(1), cache.generation)
    assert cache.get("t") is not None


def test_the_cache_size_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from fhir_server.config import Settings
    from smart_auth import AuthConfig, AuthServer

    settings = Settings(auto_seed=False)
    assert AuthConfig.from_settings(settings).token_cache_size == 10_000
    monkeypatch.setenv("AUTH_TOKEN_CACHE_SIZE", "0")
    assert AuthServer(settings).token_cache is None  # off: every request re-verifies
    for bad in ("-1", "lots", "10000001"):
        monkeypatch.setenv("AUTH_TOKEN_CACHE_SIZE", bad)
        with pytest.raises(ValueError):
            AuthConfig.from_settings(settings)
    with pytest.raises(ValueError, match="revocation_poll_s"):
        AuthConfig(base_url="http://x/fhir", revocation_poll_s=1.0, revocation_bound_s=0.9)
