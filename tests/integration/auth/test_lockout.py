"""Lockout after repeated failures, same answer for every failure, auth_events recorded."""

from __future__ import annotations

import pytest

from smart_auth import accounts
from tests.integration.auth.conftest import PUBLIC, authorize_params, login_page, pkce, submit_login
from tests.integration.auth.forms import only_form

PASSWORD = "Correct-Horse-9!"


def error_text(html: str) -> str:
    start = html.index('role="alert">') + len('role="alert">')
    return html[start : html.index("</p>", start)]


@pytest.fixture
async def account(env):
    import secrets

    name = f"lock.{secrets.token_hex(4)}"
    await env.run(
        lambda: accounts.create_account(
            env.server.store,
            username=name,
            password=PASSWORD,
            level="dslogon-premium",
            fhir_user="Patient/lock-test",
        )
    )
    return name


async def attempt(env, username: str, password: str):
    _, challenge = pkce()
    page = await login_page(
        env.http, authorize_params(PUBLIC, "patient/*.rs launch/patient", challenge)
    )
    return await submit_login(env.http, page.text, username, password)


async def test_lockout_after_five_failures(env, account):
    messages = set()
    for _ in range(5):
        r = await attempt(env, account, "wrong-password")
        assert r.status_code == 401
        messages.add(error_text(r.text))
    locked = await attempt(env, account, PASSWORD)
    assert locked.status_code == 401
    messages.add(error_text(locked.text))
    unknown = await attempt(env, "no.such.user", "whatever")
    messages.add(error_text(unknown.text))
    assert len(messages) == 1  # never reveals which part was wrong, or a lock
    only_form(locked.text)  # the login form again
    events = await env.run(
        lambda: list(env.server.store.events.find({"username": account}, sort=[("at", 1)]))
    )
    outcomes = [e["outcome"] for e in events]
    assert outcomes.count("failure") == 6 and outcomes.count("lockout") == 1
    assert events[-1]["reason"] == "locked"
    doc = await env.run(lambda: env.server.store.users.find_one({"_id": account}))
    assert doc["locked_until"] > events[0]["at"]


async def test_success_resets_the_counter_and_is_recorded(env, account):
    for _ in range(4):
        await attempt(env, account, "wrong-password")
    ok = await attempt(env, account, PASSWORD)
    assert ok.status_code == 200 and "Allow" in ok.text
    for _ in range(4):
        await attempt(env, account, "wrong-password")
    assert (await attempt(env, account, PASSWORD)).status_code == 200
    events = await env.run(lambda: list(env.server.store.events.find({"username": account})))
    assert [e["outcome"] for e in events].count("success") == 2
    assert "lockout" not in [e["outcome"] for e in events]


async def test_card_choice_must_match_the_account(env, account):
    r = await attempt(env, account, PASSWORD)
    assert r.status_code == 200
    _, challenge = pkce()
    page = await login_page(
        env.http, authorize_params(PUBLIC, "patient/*.rs launch/patient", challenge)
    )
    wrong = await submit_login(env.http, page.text, account, PASSWORD, method="cac")
    assert wrong.status_code == 401


async def test_seed_accounts_refused_in_production(env):
    from smart_auth.config import SEED_DIR

    with pytest.raises(RuntimeError):
        accounts.seed_accounts(env.server.store, SEED_DIR / "logins.json", production=True)


async def test_a_concurrent_burst_evaluates_no_more_than_the_limit(env, account, monkeypatch):
    """20 guesses at once once had all 20 passwords checked (19 failures recorded) and the
    right one inside the burst logged in. The wrong guesses are held inside the password
    check until five are there; then the right password arrives and must meet the lock."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    real_verify = accounts._verify
    doc = await env.run(lambda: env.server.store.users.find_one({"_id": account}))
    real_hash = doc["password_hash"]
    checked: list[str] = []
    inside, release = threading.Semaphore(0), threading.Event()

    def held_verify(password_hash: str, password: str) -> bool:
        if password_hash == real_hash:
            checked.append(password)
            if password != PASSWORD:
                inside.release()
                assert release.wait(30)
        return real_verify(password_hash, password)

    monkeypatch.setattr(accounts, "_verify", held_verify)
    policy = env.server.policy

    def guess(password: str) -> bool:
        try:
            accounts.authenticate(env.server.store, policy, account, password)
            return True
        except accounts.LoginFailed:
            return False

    limit = policy.lockout.max_failures
    with ThreadPoolExecutor(max_workers=20) as pool:
        wrong = [pool.submit(guess, f"wrong-{i}") for i in range(11)]
        for _ in range(limit):
            assert await env.run(lambda: inside.acquire(timeout=30))
        right = await env.run(guess, PASSWORD)  # the limit's slots are all taken
        release.set()
        results = [f.result(timeout=60) for f in wrong]
    assert right is False and not any(results)
    assert len(checked) == limit  # never more than the limit evaluated
    assert PASSWORD not in checked
    events = await env.run(lambda: list(env.server.store.events.find({"username": account})))
    reasons = [e.get("reason") for e in events if e["outcome"] == "failure"]
    assert reasons.count("bad-password") == limit
    assert [e["outcome"] for e in events].count("lockout") == 1
    assert (await attempt(env, account, PASSWORD)).status_code == 401  # still locked


async def test_refusals_hash_a_dummy_password(env, account, monkeypatch):
    """Unknown and locked accounts cost one argon2 verification too (equal timing): the
    code path is asserted here; the measured medians are in docs/smart.md."""
    hashes: list[str] = []
    real_verify = accounts._verify

    def spy(password_hash: str, password: str) -> bool:
        hashes.append(password_hash)
        return real_verify(password_hash, password)

    monkeypatch.setattr(accounts, "_verify", spy)
    assert (await attempt(env, "no.such.user", "whatever")).status_code == 401
    assert hashes == [accounts._DUMMY_HASH]
    for _ in range(5):
        await attempt(env, account, "wrong-password")
    hashes.clear()
    assert (await attempt(env, account, PASSWORD)).status_code == 401  # locked
    assert hashes == [accounts._DUMMY_HASH]  # never the account's own hash while locked
