"""The token cache on the real database: a hit costs no database command, no signature
check and no thread; expiry, the revocation feed and fail-closed (docs/smart.md,
"Token cache"). The two-process proof is tests/e2e/auth/test_revocation_processes.py."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from joserfc import jwt
from pymongo import monitoring

import smart_auth
import smart_auth.store
from fhir_server.db.embedded import free_port
from smart_auth import AuthServer, InvalidToken
from smart_auth.clients import load_client
from smart_auth.models import GrantSubject
from smart_auth.revocations import KEEP, Revocation, RevocationWatch, publish, read_since
from smart_auth.rfc9068 import issue_access_token
from smart_auth.store import AuthStore
from smart_auth.token_cache import Entry, TokenCache
from tests.conftest import make_settings
from tests.integration.auth.conftest import BACKEND, PUBLIC, build_app


@dataclass
class Commands(monitoring.CommandListener):
    """Every command the authorization server's own client sends, but the feed's polls."""

    names: list[str] = field(default_factory=list)

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if threading.current_thread().name != "smart-auth-revocations":
            self.names.append(f"{event.command_name} {event.command.get(event.command_name)}")

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        return None

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        return None


@dataclass
class Env:
    app: Any
    server: AuthServer
    commands: Commands


@pytest.fixture(scope="module")
async def cenv(mongo_uri: str) -> AsyncIterator[Env]:
    commands = Commands()
    options = smart_auth.store.client_options
    with pytest.MonkeyPatch.context() as patch:
        # The real client on the real database, with a listener that counts its commands.
        patch.setattr(
            smart_auth.store,
            "client_options",
            lambda *a, **k: {**options(*a, **k), "event_listeners": [commands]},
        )
        settings = make_settings(mongo_uri)
        app = build_app(settings)
        async with app.router.lifespan_context(app):
            server: AuthServer = app.state.smart_auth
            await anyio.to_thread.run_sync(server.seed_development)
            yield Env(app, server, commands)
            await anyio.to_thread.run_sync(
                lambda: server.store.client.drop_database(settings.database)
            )


def backend_token(server: AuthServer, lifetime_s: int | None = None) -> str:
    client = load_client(server.store, BACKEND["client_id"])
    assert client is not None
    body = server.generate_token(
        "client_credentials", client, scope="system/*.rs", expires_in=lifetime_s
    )
    return str(body["access_token"])


def user_token(server: AuthServer, username: str) -> str:
    grant = server.new_grant(PUBLIC["client_id"], username, "patient/*.rs")
    subject = GrantSubject(
        username=username, fhir_user="Patient/x", level="dslogon-premium", grant_id=grant
    )
    return str(
        issue_access_token(
            server.keys,
            server.store,
            server.config,
            client_id=PUBLIC["client_id"],
            scope="patient/*.rs",
            grant_id=grant,
            subject=subject,
            lifetime_s=600,
        )
    )


@contextmanager
def counted(monkeypatch: pytest.MonkeyPatch, env: Env) -> Iterator[dict[str, int]]:
    """Signature checks and thread hops during the block, and the database commands."""
    seen = {"decode": 0, "thread": 0}
    decode, run_sync = jwt.decode, anyio.to_thread.run_sync

    def counting_decode(*a: Any, **k: Any) -> Any:
        seen["decode"] += 1
        return decode(*a, **k)

    async def counting_run_sync(*a: Any, **k: Any) -> Any:
        seen["thread"] += 1
        return await run_sync(*a, **k)

    monkeypatch.setattr(jwt, "decode", counting_decode)
    monkeypatch.setattr(anyio.to_thread, "run_sync", counting_run_sync)
    env.commands.names.clear()
    yield seen
    monkeypatch.undo()


async def until(done: Callable[[], bool], timeout_s: float = 5.0) -> float:
    """Seconds until ``done()`` holds, checked every 10 ms."""
    start = time.monotonic()
    for _ in range(int(timeout_s / 0.01)):
        if done():
            return time.monotonic() - start
        await anyio.sleep(0.01)
    raise AssertionError("timed out")


async def served_for(serving: Callable[[], bool], timeout_s: float = 5.0) -> float:
    """How long after now ``serving()`` was last seen true (checked every 10 ms until it is
    false): a late check on a loaded machine only means fewer observations, never a
    longer figure."""
    start = last = time.monotonic()
    for _ in range(int(timeout_s / 0.01)):
        now = time.monotonic()
        if not serving():
            return last - start
        last = now
        await anyio.sleep(0.01)
    raise AssertionError("still served")


async def wait_fresh(cache: TokenCache) -> None:
    await until(lambda: cache.fresh)


async def test_a_hit_needs_no_database_signature_or_thread(
    cenv: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = cenv.server
    assert server.token_cache is not None
    await wait_fresh(server.token_cache)
    token = await anyio.to_thread.run_sync(backend_token, server)
    with counted(monkeypatch, cenv) as seen:
        first = await smart_auth.verify_access_token(cenv.app, token)
    assert seen == {"decode": 1, "thread": 1}
    assert any(name.startswith("find auth_tokens") for name in cenv.commands.names)
    with counted(monkeypatch, cenv) as seen:
        again = [await smart_auth.verify_access_token(cenv.app, token) for _ in range(5)]
    assert seen == {"decode": 0, "thread": 0}
    assert cenv.commands.names == []
    # The very context the full check built: same scopes, same everything.
    assert all(ctx is first for ctx in again)
    # Another string, even one character off, is a full check (and here a refusal).
    with counted(monkeypatch, cenv) as seen, pytest.raises(InvalidToken):
        await smart_auth.verify_access_token(
            cenv.app, token[:-1] + ("A" if token[-1] != "A" else "B")
        )
    assert seen["thread"] == 1


async def test_an_entry_ends_at_the_tokens_expiry(
    cenv: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = cenv.server
    token = await anyio.to_thread.run_sync(lambda: backend_token(server, lifetime_s=2))
    ctx = await smart_auth.verify_access_token(cenv.app, token)
    with counted(monkeypatch, cenv) as seen:
        assert await smart_auth.verify_access_token(cenv.app, token) is ctx
    assert seen["thread"] == 0
    await anyio.sleep(max(0.0, ctx.expires_at.timestamp() - time.time()) + 0.05)
    # Past `exp` the cache has nothing; the full check refuses (the record has expired,
    # although the signature check alone would still allow its 30 s leeway).
    with counted(monkeypatch, cenv) as seen, pytest.raises(InvalidToken):
        await smart_auth.verify_access_token(cenv.app, token)
    assert seen["thread"] == 1


async def test_every_revocation_kind_drops_at_once_in_the_revoking_process(cenv: Env) -> None:
    server, store = cenv.server, cenv.server.store
    run = anyio.to_thread.run_sync
    cases = [
        ("token", lambda t: store.revoke_token(_jti(t), "test")),
        ("grant", lambda t: store.revoke_grant(_grant(store, t), "test")),
        ("account", lambda t: store.revoke_account("cache.alice", "test")),
    ]
    for kind, revoke in cases:
        token = await run(user_token, server, "cache.alice")
        await smart_auth.verify_access_token(cenv.app, token)
        assert server.cached_access_token(token) is not None, kind
        await run(revoke, token)
        assert server.cached_access_token(token) is None, kind
        with pytest.raises(InvalidToken):
            await smart_auth.verify_access_token(cenv.app, token)
    token = await run(backend_token, server)
    await smart_auth.verify_access_token(cenv.app, token)
    await run(lambda: store.revoke_client(BACKEND["client_id"], "test"))
    assert server.cached_access_token(token) is None
    with pytest.raises(InvalidToken):
        await smart_auth.verify_access_token(cenv.app, token)


async def test_another_process_learns_within_the_bound(cenv: Env, mongo_uri: str) -> None:
    """A second authorization server on the same database stands for another process."""
    settings = make_settings(mongo_uri, database=cenv.server.config.database)
    other = AuthServer(settings)
    await anyio.to_thread.run_sync(other.start, mongo_uri)
    try:
        assert other.token_cache is not None
        await wait_fresh(other.token_cache)
        token = await anyio.to_thread.run_sync(user_token, cenv.server, "cache.bob")
        ctx = await smart_auth.verify_access_token(other, token)
        assert await smart_auth.verify_access_token(other, token) is ctx  # cached there
        await anyio.to_thread.run_sync(lambda: cenv.server.store.revoke_token(ctx.token_id, "t"))
        served = await served_for(lambda: other.cached_access_token(token) is not None)
        assert served <= other.config.revocation_bound_s, served
        with pytest.raises(InvalidToken):
            await smart_auth.verify_access_token(other, token)
    finally:
        await anyio.to_thread.run_sync(other.close)


async def test_the_feed_names_what_was_missed_or_says_start_again(cenv: Env) -> None:
    store = cenv.server.store

    def check() -> None:
        seen, _ = read_since(store, None)
        publish(store, [Revocation("token", "a"), Revocation("grant", "b")])
        publish(store, [Revocation("client", "c")])
        seq, events = read_since(store, seen)
        assert seq == seen + 3
        assert events == [
            Revocation("token", "a"),
            Revocation("grant", "b"),
            Revocation("client", "c"),
        ]
        assert read_since(store, seq) == (seq, [])
        publish(store, [Revocation("token", str(n)) for n in range(KEEP + 1)])
        assert read_since(store, seq)[1] is None  # fell out of the window: drop it all
        assert read_since(store, None)[1] is None

    await anyio.to_thread.run_sync(check)


async def test_an_unreadable_feed_stops_the_cache_within_the_bound(cenv: Env) -> None:
    bound = 0.5
    cache = TokenCache(10, stale_after_s=bound)
    watch = RevocationWatch(cenv.server.store, cache, 0.05)
    dead = AuthStore(f"mongodb://127.0.0.1:{free_port()}/", "none", timeout_ms=100)
    token = await anyio.to_thread.run_sync(backend_token, cenv.server)
    ctx = await smart_auth.verify_access_token(cenv.app, token)
    watch.start()
    try:
        await wait_fresh(cache)
        cache.put(token, Entry(ctx, None, ctx.expires_at.timestamp()), cache.generation)
        assert cache.get(token) is ctx
        watch.store = dead  # the database stops answering
        assert await served_for(lambda: cache.get(token) is not None) <= bound
        watch.store = cenv.server.store  # and comes back
        await wait_fresh(cache)
        assert cache.get(token) is ctx
    finally:
        watch.stop()
        dead.close()


def _jti(token: str) -> str:
    import orjson
    from joserfc import jws

    return str(orjson.loads(jws.extract_compact(token.encode()).payload)["jti"])


def _grant(store: AuthStore, token: str) -> str:
    doc = store.tokens.find_one({"_id": _jti(token)})
    assert doc is not None
    return str(doc["grant_id"])


async def test_what_is_issued_as_its_grant_is_revoked_is_revoked_too(cenv: Env) -> None:
    """A refresh that claimed its token just before the replay revoked the grant writes its
    new records after the revocation's updates: issuance checks the grant afterwards."""
    server, store = cenv.server, cenv.server.store

    def race() -> dict[str, Any]:
        client = load_client(store, PUBLIC["client_id"])
        assert client is not None
        grant = server.new_grant(client.client_id, "cache.carol", "patient/*.rs offline_access")
        store.revoke_grant(grant, "refresh token replayed")  # the replay won the race
        subject = GrantSubject(
            username="cache.carol", fhir_user="Patient/x", level="dslogon-premium", grant_id=grant
        )
        return server.generate_token(
            "refresh_token", client, user=subject, scope="patient/*.rs offline_access"
        )

    body = await anyio.to_thread.run_sync(race)
    with pytest.raises(InvalidToken):
        await smart_auth.verify_access_token(cenv.app, body["access_token"])
    refresh = await anyio.to_thread.run_sync(
        lambda: store.refresh.find_one({"_id": smart_auth.store.digest(body["refresh_token"])})
    )
    assert refresh is not None and refresh["status"] == "revoked"
