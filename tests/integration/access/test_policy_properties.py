"""Property: the narrowed query and the in-memory policy agree, for random searches.

For each seed actor (a real token from the seed logins, turned into its `AccessPolicy` as
the server does) and random search requests over the seed data (parameters from the
registry, values drawn from the stored documents' own index keys, dates with every prefix),
on the real database:

- every resource the narrowed query (`criteria AND policy.type_filter`) returns matches the
  search and is admitted by `policy.admits` in memory;
- every stored resource that the search matches and `policy.admits` admits is returned;
- `policy.admits` on the stored access keys (`ak`, what the post-check tests) decides as
  on the whole index (`ix.k`).

Types the token's scopes do not grant must return nothing (`admits` leaves scopes out).
Hypothesis runs derandomized with a bounded number of examples (docs/access.md).
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.from_thread
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import smart_auth
from fhir_server import clock
from fhir_server.access import release
from fhir_server.access.policy import AccessPolicy, build_policy
from fhir_server.access.stored_keys import stored_keys
from fhir_server.errors import FhirError
from fhir_server.search.execute import criteria_filter
from fhir_server.search.parse import parse_search
from smart_auth import allows
from tests.integration.access.test_smart_enforcement import Server
from tests.integration.seeded import seeded_server

Doc = dict[str, Any]
ROLES = (
    "sponsor",
    "spouse",
    "adult-dependent-no-grant",
    "adult-dependent-granted",
    "basic-user",
    "managed-account",
    "practitioner",
)
DATE_PREFIXES = ("", "eq", "ne", "lt", "gt", "le", "ge", "sa", "eb")
EXAMPLES = 300


def _plain_key(key: str) -> bool:
    """An equality key `code=value` of a parameter (not a presence or word key)."""
    code, _, value = key.partition("=")
    return bool(value) and ":" not in code and code not in ("_text", "_content")


def released(policy: AccessPolicy, rt: str, stored: dict[str, Any]) -> bool:
    """Results release in memory (access/release.py), on the stored release instant."""
    if policy.release is None:
        return True
    return release.admits(release.load_table(), rt, {}, stored, clock.now())


class World:
    """The seeded server, each actor's policy, and the search values the seed offers."""

    def __init__(self, app: Any, policies: dict[str, AccessPolicy]) -> None:
        self.app = app
        self.ctx = app.state.ctx
        self.policies = policies
        self.keys: dict[str, list[str]] = defaultdict(list)  # type -> "code=value"
        self.strings: dict[str, list[str]] = defaultdict(list)  # type -> "code|folded"
        self.dates: dict[str, list[str]] = {}
        self.stats: Counter[str] = Counter()  # how many cases matched, narrowed, hid some

    async def load(self) -> None:
        async for d in self.ctx.store.resources.find({}, {"rt": 1, "ix.k": 1, "ix.s": 1}):
            rt = d["rt"]
            ix = d.get("ix") or {}
            self.keys[rt] += [k for k in ix.get("k", []) if _plain_key(k)]
            self.strings[rt] += [s for s in ix.get("s", []) if ":" not in s.split("|", 1)[0]]
        for rt in self.keys:
            params = self.ctx.registry.params_for(rt)
            self.dates[rt] = sorted(c for c, p in params.items() if p.type == "date")
            self.keys[rt] = sorted(set(self.keys[rt]))
            self.strings[rt] = sorted(set(self.strings[rt]))

    async def check(self, role: str, rt: str, params: list[tuple[str, str]]) -> None:
        policy = self.policies[role]
        registry, db = self.ctx.registry, self.ctx.store.db
        try:
            req = parse_search(rt, params, registry, strict=True)
            crit = await criteria_filter(db, registry, req)
        except FhirError:
            return  # a request the parser refuses is not a search to compare
        col = self.ctx.store.resources
        matched = {
            d["_id"]: d
            async for d in col.find({"$and": [{"rt": rt}, crit]}, {"comp": 1, "ix.k": 1, "ak": 1})
        }
        narrowed_filter = {"$and": [{"rt": rt}, crit, policy.type_filter(rt)]}
        narrowed = {d["_id"] async for d in col.find(narrowed_filter, {"_id": 1})}
        assert policy.auth is not None
        granted = allows(policy.auth.scopes, rt, "read") or allows(policy.auth.scopes, rt, "search")
        admitted = {
            i
            for i, d in matched.items()
            if granted
            and policy.admits(rt, d.get("comp") or [], (d.get("ix") or {}).get("k", []))
            and released(policy, rt, d)
        }
        context = (role, rt, params)
        # The post-check's stored access keys (`ak`) decide as the whole index does.
        by_ak = set()
        for i, d in matched.items():
            keys = stored_keys(d, policy.key_params)
            assert keys is not None, (context, i)  # every document is written with `ak`
            if granted and policy.admits(rt, d.get("comp") or [], keys) and released(policy, rt, d):
                by_ak.add(i)
        assert by_ak == admitted, (context, by_ak ^ admitted)
        self.stats["cases"] += 1
        self.stats["matched"] += bool(matched)
        self.stats["narrowed"] += bool(narrowed)
        self.stats["hidden"] += len(matched) > len(narrowed) > 0
        assert narrowed <= set(matched), context  # the policy only narrows
        assert narrowed == admitted, (context, narrowed ^ admitted)


@pytest.fixture(scope="module")
async def world(mongo_uri: str) -> AsyncIterator[World]:
    async with seeded_server(mongo_uri) as (app, http):
        server = Server(http)
        policies = {}
        for role in ROLES:
            scope = "openid fhirUser user/*.rs"
            token = await server.token(role, scope)
            auth = await smart_auth.verify_access_token(app, token)
            policies[role] = await build_policy(
                app.state.ctx.store.db, app.state.ctx.policy_tables, auth
            )
        w = World(app, policies)
        await w.load()
        yield w


@st.composite
def searches(draw: st.DrawFn, w: World) -> tuple[str, str, list[tuple[str, str]]]:
    role = draw(st.sampled_from(ROLES))
    rt = draw(st.sampled_from(sorted(w.keys)))
    params: list[tuple[str, str]] = []
    for _ in range(draw(st.integers(0, 2))):
        kind = draw(st.sampled_from(("key", "not", "string", "date", "missing")))
        if kind in ("key", "not") and w.keys[rt]:
            code, value = draw(st.sampled_from(w.keys[rt])).split("=", 1)
            name = code if kind == "key" or "|" not in value else f"{code}:not"
            params.append((name, value))
        elif kind == "string" and w.strings[rt]:
            code, folded = draw(st.sampled_from(w.strings[rt])).split("|", 1)
            params.append((code, folded[: draw(st.integers(1, 6))]))
        elif kind == "date" and w.dates[rt]:
            code = draw(st.sampled_from(w.dates[rt]))
            year = draw(st.integers(1940, 2030))
            month = draw(st.integers(1, 12))
            value = draw(
                st.sampled_from((f"{year}", f"{year}-{month:02d}", f"{year}-{month:02d}-15"))
            )
            params.append((code, draw(st.sampled_from(DATE_PREFIXES)) + value))
        elif kind == "missing" and w.dates[rt]:
            params.append(
                (
                    f"{draw(st.sampled_from(w.dates[rt]))}:missing",
                    draw(st.sampled_from(("true", "false"))),
                )
            )
    return role, rt, params


async def test_narrowed_query_agrees_with_memory(world: World) -> None:
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(searches(world))
    def prop(case: tuple[str, str, list[tuple[str, str]]]) -> None:
        anyio.from_thread.run(world.check, *case)

    started = time.monotonic()
    await anyio.to_thread.run_sync(prop)
    print(f"{dict(world.stats)} in {time.monotonic() - started:.1f} s")
    # The examples reach both sides: searches that match, and policies that hide part.
    assert world.stats["matched"] >= EXAMPLES // 4 and world.stats["hidden"] >= 3
