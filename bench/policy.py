"""The CPU one request spends building its access policy, per kind of user.

    python -m bench.policy [--n 300] [--rounds 5]

Starts a database (SecantusDB in memory, or MONGODB_URI), seeds the development
population and builds the policy of real seed users' tokens (`openid fhirUser user/*.rs`,
as the SMART login grants it; the tokens' claims are made here, not signed: verification is
not what is measured) `n` times each, in rounds. Reported per user: the median over rounds
of this process's CPU per `build_policy` (parsing, filters, the driver's side of the
lookups; the database's own CPU is another process's and is left out) and the wall time.
`--cached` builds with the process's cache of policy inputs (one epoch lookup per build
instead of the data). Run it with `PYTHONPATH=<another checkout>` to compare versions: the
policy's signature is looked up, so the same script measures both.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.crud import benchmark_database
from fhir_server.access import policy as policy_module
from smart_auth import AuthContext
from smart_auth.scopes import parse_scopes

ROOT = Path(__file__).resolve().parents[1]
SCOPE = "openid fhirUser user/*.rs"
USERS = ("sponsor", "adult-dependent-granted", "basic-user", "practitioner")


def auth_for(login: dict[str, Any]) -> AuthContext:
    return AuthContext(
        subject=login["username"],
        client_id="bench",
        scopes=parse_scopes(SCOPE),
        scope=SCOPE,
        token_id=uuid.uuid4().hex,
        grant_id=uuid.uuid4().hex,
        expires_at=datetime.now(UTC) + timedelta(hours=1),
        fhir_user=login["fhirUser"],
        acr=login["login"],
        acts_for=tuple(login.get("acts_for") or ()),
    )


def builder(ctx: Any, cached: bool = False) -> Any:
    """`build_policy` bound to this checkout's arguments (its signature changed twice);
    `cached`: with the process's cache of policy inputs (access/policy_epochs.py)."""
    build = policy_module.build_policy
    params = list(inspect.signature(build).parameters)
    if params[:2] == ["db", "registry"]:
        return lambda auth: build(ctx.store.db, ctx.registry, auth)
    if cached and "cache" in params:
        return lambda auth: build(ctx.store, ctx.policy_tables, auth, cache=ctx.policy_inputs)
    return lambda auth: build(ctx.store, ctx.policy_tables, auth)


async def bench(args: argparse.Namespace, uri: str) -> None:
    from fhir_server.app import build_context
    from fhir_server.config import Settings
    from fhir_server.db.client import ensure_indexes, open_client
    from fhir_server.search.indexes import index_models
    from fhir_server.seeding import seed

    settings = Settings(mongodb_uri=uri, database=f"bench_{uuid.uuid4().hex[:8]}")
    client = open_client(uri, timeout_ms=10_000)
    try:
        ctx = build_context(settings, client[settings.database])
        await ensure_indexes(ctx.store.db, index_models())
        report = await seed(ctx)
        assert not report.failed, report.failed
        logins = json.loads((ROOT / "seed_data/logins.json").read_text())["logins"]
        build = builder(ctx, args.cached)
        users = {role: auth_for(next(x for x in logins if x["role"] == role)) for role in USERS}
        cpu: dict[str, list[float]] = {r: [] for r in USERS}
        wall: dict[str, list[float]] = {r: [] for r in USERS}
        for auth in users.values():  # warm up (lazy tables, driver connections)
            for _ in range(10):
                await build(auth)
        for _ in range(args.rounds):
            for role, auth in users.items():
                c0, w0 = time.process_time(), time.perf_counter()
                for _ in range(args.n):
                    await build(auth)
                cpu[role].append((time.process_time() - c0) / args.n)
                wall[role].append((time.perf_counter() - w0) / args.n)
        await client.drop_database(settings.database)
    finally:
        await client.close()
    print(f"n={args.n} rounds={args.rounds}; medians of rounds, per build_policy")
    print(f"{'user':<26}{'CPU us':>10}{'wall us':>10}")
    for role in USERS:
        print(
            f"{role:<26}{statistics.median(cpu[role]) * 1e6:>10.0f}"
            f"{statistics.median(wall[role]) * 1e6:>10.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cached", action="store_true", help="with the policy-input cache")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, benchmark_database(Path(tmp)) as (uri, _):
        asyncio.run(bench(args, uri))


if __name__ == "__main__":
    main()
