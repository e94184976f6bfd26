"""The cost of auditing: the same reads and searches with AuditEvents on and off, as a ratio.

    python -m bench.audit [--n 200] [--rounds 6] [--concurrency 4]

Starts a database (SecantusDB in memory, or MONGODB_URI), seeds it, and runs two real
`fhir-server serve` processes on it with tokens required (AUTH_REQUIRED=1): one audits every
interaction (the default), one runs with AUDIT=0 (the benchmark/diagnostic switch; production
refuses it). Both get a system token from the backend-service client (SMART Backend Services,
private_key_jwt). Rounds alternate between the two servers, so drift on a shared machine
hits both; each round is `n` requests, half `GET Observation/<id>`, half
`GET Observation?patient=<id>&_count=10`. Reported: requests/s each way (median of rounds)
and the ratio audited / not audited (the issue's bar: auditing must not halve throughput),
and the server's CPU time per request each way (steadier than wall-clock rates when other
work shares the machine).

Then the audited server is stopped with SIGTERM straight after a burst, while events are
still buffered, and the number of AuditEvents it wrote must equal the number of FHIR
requests it answered (none lost on a clean stop); the unaudited server must have written
none.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from joserfc import jwt
from joserfc.jwk import RSAKey
from pymongo import AsyncMongoClient

from bench.crud import benchmark_database, cpu_seconds, run_pool, start_server

ROOT = Path(__file__).resolve().parents[1]
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def backend_client() -> dict[str, Any]:
    clients = json.loads((ROOT / "seed_data/clients.json").read_text())["clients"]
    return dict(next(c for c in clients if c["role"] == "backend-service"))


async def system_token(http: httpx.AsyncClient, origin: str) -> str:
    """A `system/*.rs` token by SMART Backend Services (RFC 7523 client assertion)."""
    client = backend_client()
    key = RSAKey.import_key(client["jwk"])
    now = int(time.time())
    claims = {
        "iss": client["client_id"],
        "sub": client["client_id"],
        "aud": f"{origin}/auth/token",
        "exp": now + 240,
        "jti": str(uuid.uuid4()),
    }
    header = {"alg": client["jwk"].get("alg", "RS384"), "typ": "JWT", "kid": key.kid}
    signed = jwt.encode(header, claims, key, algorithms=[header["alg"]])
    r = await http.post(
        f"{origin}/auth/token",
        data={
            "grant_type": "client_credentials",
            "scope": "system/*.rs",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": signed,
        },
    )
    r.raise_for_status()
    return str(r.json()["access_token"])


class Target:
    """One server process, its HTTP client and the count of FHIR requests sent to it."""

    def __init__(self, name: str, proc: Any, base: str) -> None:
        self.name, self.proc, self.base = name, proc, base
        self.origin = base.removesuffix("/fhir")
        self.http = httpx.AsyncClient(base_url=base, timeout=60)
        self.sent = 0
        self.failed = 0  # non-200 answers (a search past its time budget on a busy machine)
        self.rates: list[float] = []
        self.cpu: list[float] = []  # server CPU seconds per request, per round
        self.db_cpu: list[float] = []  # the embedded database's, per request, per round

    async def login(self) -> None:
        token = await system_token(self.http, self.origin)
        self.http.headers["Authorization"] = f"Bearer {token}"

    async def get(self, url: str, **params: str) -> httpx.Response:
        self.sent += 1  # counted before the answer: a failed request is audited too
        r = await self.http.get(url, params=params)
        if r.status_code != 200:
            assert r.status_code in (503, 504), r.text  # overload, never a wrong answer
            self.failed += 1
        return r


async def workload(t: Target, n: int, concurrency: int, obs: list[str], pats: list[str]) -> float:
    async def job(i: int) -> None:
        if i % 2:
            await t.get(f"/Observation/{obs[i % len(obs)]}")
        else:
            await t.get("/Observation", patient=pats[i % len(pats)], _count="10")

    return await run_pool(n, concurrency, job)


async def bench(
    uri: str, n: int, rounds: int, concurrency: int, workdir: Path, db_pid: int | None
) -> None:
    database = f"bench_{uuid.uuid4().hex[:8]}"
    env = {"AUTH_REQUIRED": "1", "AUTO_SEED": "1"}
    # The first server seeds the database; the second starts on it once it is ready.
    on_proc, on_base = start_server(uri, database, workdir / "on.log", env)
    off_proc, off_base = start_server(uri, database, workdir / "off.log", {**env, "AUDIT": "0"})
    on, off = Target("audit on", on_proc, on_base), Target("audit off", off_proc, off_base)
    raw: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    events = raw[database].audit  # the audit log's own collection (storage/audit_store.py)
    audit_filter = {"rt": "AuditEvent"}
    try:
        baseline = await events.count_documents(audit_filter)  # the seed's own AuditEvents
        for t in (on, off):
            await t.login()
        bundle = (await off.get("/Observation", _count="200")).json()
        obs = [e["resource"]["id"] for e in bundle.get("entry", [])]
        pats = sorted(
            {
                e["resource"]["subject"]["reference"].split("/")[-1]
                for e in bundle.get("entry", [])
                if e["resource"].get("subject", {}).get("reference", "").startswith("Patient/")
            }
        )
        assert obs and pats, "the seed has no Observations"
        for t in (on, off):  # warm both up (caches, connection pools)
            await workload(t, 40, concurrency, obs, pats)
        for r in range(rounds):
            for t in (on, off) if r % 2 == 0 else (off, on):
                cpu0, db0 = cpu_seconds(t.proc.pid), cpu_seconds(db_pid) if db_pid else 0.0
                t.rates.append(await workload(t, n, concurrency, obs, pats))
                # The sink flushes every 0.5 s: wait, so this round's events (their encoding
                # in the server, their inserts in the database) are charged to this round.
                await asyncio.sleep(1.0)
                t.cpu.append((cpu_seconds(t.proc.pid) - cpu0) / n)
                if db_pid:
                    t.db_cpu.append((cpu_seconds(db_pid) - db0) / n)
        # A last burst, then SIGTERM at once: part of it is still in the sink's buffer.
        await workload(on, 200, concurrency, obs, pats)
        at_stop = await events.count_documents(audit_filter) - baseline
        on.proc.send_signal(signal.SIGTERM)
        code = on.proc.wait(timeout=60)
        written = await events.count_documents(audit_filter) - baseline
        # Every request of the unaudited server (on top of these 50) wrote nothing either,
        # or `written` would exceed what the audited server was sent.
        await workload(off, 50, concurrency, obs, pats)
        off_wrote = await events.count_documents(audit_filter) - baseline - written
    finally:
        for t in (on, off):
            await t.http.aclose()
            if t.proc.poll() is None:
                t.proc.terminate()
                t.proc.wait(timeout=30)
        await raw.drop_database(database)
        await raw.close()

    where = "MONGODB_URI" if os.environ.get("MONGODB_URI") else "SecantusDB (embedded)"
    print(f"n={n} per round, rounds={rounds}, concurrency={concurrency}, database={where}")
    print("workload: 1/2 GET Observation/<id>, 1/2 GET Observation?patient=<id>&_count=10")
    print(
        f"{'server':<12}{'req/s':>8}{'server CPU ms/req':>19}{'database CPU ms/req':>21}"
        "   req/s per round (medians over rounds)"
    )
    for t in (on, off):
        rounds_txt = ", ".join(f"{r:.0f}" for r in t.rates)
        cpu = statistics.median(t.cpu) * 1000
        db = f"{statistics.median(t.db_cpu) * 1000:.2f}" if t.db_cpu else "n/a"
        print(f"{t.name:<12}{statistics.median(t.rates):>8.0f}{cpu:>19.2f}{db:>21}   {rounds_txt}")
    ratio = statistics.median(on.rates) / statistics.median(off.rates)
    # On a shared machine the wall-clock rate swings with other load; the server's own CPU
    # per request does not, and bounds the throughput of a CPU-bound server.
    cpu_ratio = statistics.median(off.cpu) / statistics.median(on.cpu)
    print(f"ratio audited / not audited: {ratio:.2f} by requests/s (bar: > 0.50)")
    print(f"ratio audited / not audited: {cpu_ratio:.2f} by server CPU per request")
    if on.db_cpu and off.db_cpu:
        both_on = statistics.median(on.cpu) + statistics.median(on.db_cpu)
        both_off = statistics.median(off.cpu) + statistics.median(off.db_cpu)
        print(
            f"ratio audited / not audited: {both_off / both_on:.2f} by server + database CPU "
            "per request (one machine running both)"
        )
    print(
        f"clean stop (SIGTERM, exit {code}): {on.sent} requests to the audited server, "
        f"{written} AuditEvents written ({at_stop} before SIGTERM, {written - at_stop} "
        f"flushed at shutdown), lost {on.sent - written}; "
        f"the unaudited server ({off.sent} requests) wrote {off_wrote}; "
        f"answers other than 200 (overload): {on.failed} audited, {off.failed} not"
    )
    if written != on.sent or off_wrote != 0:
        raise SystemExit("audit count mismatch")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, benchmark_database(Path(tmp)) as (uri, db_pid):
        asyncio.run(bench(uri, args.n, args.rounds, args.concurrency, Path(tmp), db_pid))


if __name__ == "__main__":
    main()
