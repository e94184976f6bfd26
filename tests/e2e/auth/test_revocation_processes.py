"""Revocation reaches every process within a second (docs/smart.md, "Token cache").

Two real `fhir-server serve` processes share one database (and one public base URL, as
behind a load balancer). A token is used on both, so both hold it in their caches; it is
then revoked through process A (RFC 7009, a replayed refresh token, an account lockout) or
by `fhir-server client disable`, and process B must refuse it within 1 s: no request
to B that started more than 1 s after the revoking call returned is answered.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import anyio
import httpx
import pytest
from joserfc.jwk import RSAKey

from fhir_server.db.embedded import free_port
from smart_auth import AuthServer
from smart_auth.rfc7523 import ASSERTION_TYPE
from tests.conftest import make_settings
from tests.e2e.conftest import SCRIPT, LiveServer
from tests.integration.auth.conftest import BACKEND, PUBLIC, authorize, exchange, login_for
from tests.integration.auth.test_backend_services import assertion
from tests.integration.auth.test_lockout import attempt

pytestmark = pytest.mark.e2e

PUBLIC_BASE = "http://127.0.0.1:8080/fhir"  # both processes: one service behind a balancer
PROMISE_S = 1.0  # docs/smart.md: revocation reaches every process within a second
SCOPE = "launch/patient patient/*.rs offline_access"


@dataclass
class Pair:
    a: LiveServer
    b: LiveServer
    admin: AuthServer  # seeded the logins and clients (the servers run with AUTO_SEED=0)

    def origin(self, server: LiveServer) -> str:
        return server.base.removesuffix("/fhir")


@pytest.fixture(scope="module")
def pair(mongo_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    database = f"e2e_{uuid.uuid4().hex[:10]}"
    admin = AuthServer(make_settings(mongo_uri, database=database))
    admin.start(mongo_uri)
    admin.seed_development()
    logs = tmp_path_factory.mktemp("revocation")
    env = {
        "MONGODB_URI": mongo_uri,
        "MONGODB_DATABASE": database,
        "AUTO_SEED": "0",
        "AUTH_REQUIRED": "1",
        "PUBLIC_BASE_URL": PUBLIC_BASE,
        "DATA_DIR": str(logs / "data"),
    }
    servers = [LiveServer(env, logs / f"server-{n}.log") for n in "ab"]
    try:
        with ThreadPoolExecutor(2) as starting:  # side by side: start-up is most of the time
            list(starting.map(LiveServer.start, servers))
        yield Pair(servers[0], servers[1], admin)
    finally:
        for s in servers:
            s.stop()
        admin.store.client.drop_database(database)
        admin.close()


async def read(server: LiveServer, token: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.get(
            f"{server.base}/Patient/spouse-maria-carter",
            headers={"Authorization": f"Bearer {token}"},
        )


async def use_everywhere(pair: Pair, token: str) -> None:
    """Twice on each process: verified once, then served from its cache."""
    for server in (pair.a, pair.b, pair.a, pair.b):
        r = await read(server, token)
        assert r.status_code != 401 and r.status_code < 500, r.text


async def refused_within_promise(server: LiveServer, token: str, since: float) -> float:
    """Ask until 401; every request still accepted must have started within the promise
    of `since` (the server answered it no earlier than it started). Returns the seconds
    from `since` to the start of the first refusal."""
    for _ in range(1000):
        start = time.monotonic()
        r = await read(server, token)
        if r.status_code == 401:
            return start - since
        assert r.status_code < 500, r.text
        assert start - since <= PROMISE_S, f"still accepted {start - since:.3f} s after"
    raise AssertionError("the revoked token was still accepted")


async def user_tokens(pair: Pair, role: str) -> dict[str, str]:
    async with httpx.AsyncClient(base_url=pair.origin(pair.a), timeout=30) as http:
        auth = await authorize(http, role, SCOPE)
        r = await exchange(http, auth)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def test_rfc7009_revocation_on_a_reaches_b(pair: Pair) -> None:
    body = await user_tokens(pair, "spouse")
    await use_everywhere(pair, body["access_token"])
    async with httpx.AsyncClient(base_url=pair.origin(pair.a)) as http:
        r = await http.post(
            "/auth/revoke",
            data={
                "token": body["access_token"],
                "token_type_hint": "access_token",
                "client_id": PUBLIC["client_id"],
            },
        )
    assert r.status_code == 200, r.text
    elapsed = await refused_within_promise(pair.b, body["access_token"], time.monotonic())
    assert (await read(pair.a, body["access_token"])).status_code == 401
    print(f"RFC 7009 revocation on A refused by B after {elapsed:.3f} s")


async def test_refresh_replay_on_a_revokes_the_grant_on_b(pair: Pair) -> None:
    first = await user_tokens(pair, "spouse")
    data = {
        "grant_type": "refresh_token",
        "refresh_token": first["refresh_token"],
        "client_id": PUBLIC["client_id"],
    }
    async with httpx.AsyncClient(base_url=pair.origin(pair.a)) as http:
        second = await http.post("/auth/token", data=data)
        assert second.status_code == 200, second.text
        newest = second.json()["access_token"]
        await use_everywhere(pair, newest)
        replay = await http.post("/auth/token", data=data)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    elapsed = await refused_within_promise(pair.b, newest, time.monotonic())
    print(f"refresh replay on A: grant refused by B after {elapsed:.3f} s")


async def test_lockout_on_a_ends_the_accounts_tokens_on_b(pair: Pair) -> None:
    who = login_for("cac-user")
    body = await user_tokens(pair, "cac-user")
    await use_everywhere(pair, body["access_token"])
    async with httpx.AsyncClient(base_url=pair.origin(pair.a), timeout=30) as http:
        holder = _Http(http)
        for _ in range(pair.admin.policy.lockout.max_failures):
            r = await attempt(holder, who["username"], "not-the-password")
            assert r.status_code == 401
    elapsed = await refused_within_promise(pair.b, body["access_token"], time.monotonic())
    print(f"lockout on A: the account's token refused by B after {elapsed:.3f} s")


async def test_disabled_client_is_refused_everywhere(pair: Pair) -> None:
    key = RSAKey.import_key(BACKEND["jwk"])
    form = {
        "grant_type": "client_credentials",
        "scope": "system/*.rs",
        "client_assertion_type": ASSERTION_TYPE,
    }
    async with httpx.AsyncClient(base_url=pair.origin(pair.a)) as http:
        r = await http.post(
            "/auth/token",
            data={**form, "client_assertion": assertion(key, BACKEND["client_id"], "RS384")},
        )
        assert r.status_code == 200, r.text
        token = r.json()["access_token"]
        await use_everywhere(pair, token)
        # The operator's command, a third process on the same database.
        done = await anyio.run_process(
            [SCRIPT, "client", "disable", BACKEND["client_id"]],
            env={**pair.a.env, "PORT": str(free_port())},
            check=False,
        )
        assert done.returncode == 0, done.stderr
        elapsed = await refused_within_promise(pair.b, token, time.monotonic())
        assert (await read(pair.a, token)).status_code == 401
        again = await http.post(
            "/auth/token",
            data={**form, "client_assertion": assertion(key, BACKEND["client_id"], "RS384")},
        )
    assert again.status_code == 401 and again.json()["error"] == "invalid_client"
    unknown = await anyio.run_process(
        [SCRIPT, "client", "disable", "no-such-client"], env=pair.a.env, check=False
    )
    assert unknown.returncode == 1 and b"no registered client" in unknown.stderr
    print(f"client disabled: its token refused by B after {elapsed:.3f} s")


@dataclass
class _Http:
    """What tests/integration/auth/test_lockout.attempt needs of its environment."""

    http: httpx.AsyncClient
