"""Results release: the time from storing a final result to its "new results are available"
notification, and from a hold's expiry to it; and a patient's result search beside the raw
driver (what the release clause costs).

    python -m bench.results_release [--n 60] [--concurrency 4] [--load 100] [--holds 10]
                                    [--searches 200]

Starts a database (SecantusDB in memory, or MONGODB_URI) and one `fhir-server serve` on it
with tokens required and the seed population (AUTH_REQUIRED=1, AUTO_SEED=1, AUDIT=0). The
sponsor subscribes (id-only rest-hook) to "new results are available" with an endpoint in this
process; his PCM, with a token from the real login pages, stores final Observations for him.

- store -> notification: from just before each `POST Observation` (status final) to the
  arrival of its notification at the endpoint, p50/p99: `--n` one at a time, then `--load`
  sent `--concurrency` at a time (under load).
- hold expiry -> notification: `--holds` Observations stored held, expiring 2 s later; from
  the expiry instant to the arrival (the notification was queued `due` at the expiry, so this
  is the worker's poll and delivery), p50/p99.
- the patient's search `Observation?patient=<own>&_count=50` (the release clause ANDed in)
  vs the raw driver's `find` of the very documents (by `_id`) it answered, p50 each, ratio;
  and the clause's own cost on the database: the raw compartment query (`rt`, `comp`, newest
  51) with and without `ak.r: {$not: {$gt: now}}`, alternating, p50 each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from bench.crud import benchmark_database, run_pool, start_server
from bench.notifications import login, pct
from fhir_server.db.embedded import free_port
from fhir_server.notify import backport

JAMES = "Patient/sponsor-james-carter"
ROOT = Path(__file__).resolve().parents[1]
CLINICIAN = "dr.rachel.kim"
TOPIC = "https://mhs.example.org/fhir/SubscriptionTopic/results-available"
RELEASE = json.loads((ROOT / "profiles/access/release.json").read_text())


class Endpoint:
    """The rest-hook receiver: each event's arrival time, by the result's id."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.arrived: dict[str, float] = {}
        self.wall: dict[str, datetime] = {}
        self.duplicates = 0
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                now, wall = time.perf_counter(), datetime.now(UTC)
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                if len(body.get("entry", [])) > 1:
                    rid = body["entry"][1]["fullUrl"].rsplit("/", 1)[-1]
                    if rid in endpoint.arrived:
                        endpoint.duplicates += 1
                    endpoint.arrived.setdefault(rid, now)
                    endpoint.wall.setdefault(rid, wall)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def observation(i: int, extension: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "laboratory",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
        "subject": {"reference": JAMES},
        "valueQuantity": {"value": 90 + i % 40, "unit": "mg/dL"},
    }
    if extension:
        res["extension"] = extension
    return res


def hold(expires: datetime) -> list[dict[str, Any]]:
    h = RELEASE["hold"]
    return [
        {
            "url": h["extension"],
            "extension": [
                {
                    "url": "reason",
                    "valueCoding": {"system": h["reason_system"], "code": "preventing-harm"},
                },
                {
                    "url": "expires",
                    "valueDateTime": expires.isoformat(timespec="milliseconds"),
                },
            ],
        }
    ]


async def _drained(endpoint: Endpoint, ids: set[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not ids <= set(endpoint.arrived):  # noqa: ASYNC110
        await asyncio.sleep(0.01)


async def bench(args: argparse.Namespace, uri: str, workdir: Path) -> None:
    database = f"bench_{uuid.uuid4().hex[:8]}"
    env = {
        "AUTH_REQUIRED": "1",
        "AUTO_SEED": "1",
        "AUDIT": "0",
        "DATA_DIR": str(workdir / "data"),
        "QUERY_MAX_TIME_MS": "120000",
    }
    proc, base = start_server(uri, database, workdir / "server.log", env)
    origin = base.removesuffix("/fhir")
    raw: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, w="majority")
    db = raw[database]
    endpoint = Endpoint()
    sent_at: dict[str, float] = {}
    quiet: list[str] = []
    loaded: list[str] = []
    expiry_lag: list[float] = []
    server_s: list[float] = []
    raw_s: list[float] = []
    plain_s: list[float] = []
    clause_s: list[float] = []
    try:
        async with (
            httpx.AsyncClient(base_url=base, timeout=120) as sponsor,
            httpx.AsyncClient(base_url=base, timeout=120) as kim,
        ):
            sponsor.headers["Authorization"] = f"Bearer {await login(origin, 'sponsor')}"
            kim.headers["Authorization"] = f"Bearer {await login(origin, CLINICIAN)}"
            if args.search_only:
                return await _search_only(args, sponsor, db)
            sub = {
                "resourceType": "Subscription",
                "status": "requested",
                "reason": "benchmark",
                "criteria": TOPIC,
                "channel": {
                    "type": "rest-hook",
                    "endpoint": endpoint.url,
                    "payload": "application/fhir+json",
                    "_payload": {
                        "extension": [{"url": backport.PAYLOAD_CONTENT, "valueCode": "id-only"}]
                    },
                },
            }
            r = await sponsor.post("/Subscription", json=sub)
            assert r.status_code == 201, r.text
            sid = r.json()["id"]
            for _ in range(600):
                if (await sponsor.get(f"/Subscription/{sid}")).json()["status"] == "active":
                    break
                await asyncio.sleep(0.05)
            else:
                raise SystemExit("the subscription's handshake never arrived")

            async def store(i: int, extension: list[dict[str, Any]] | None = None) -> str:
                t0 = time.perf_counter()
                r = await kim.post("/Observation", json=observation(i, extension))
                assert r.status_code == 201, r.text
                rid = str(r.json()["id"])
                sent_at[rid] = t0
                return rid

            await run_pool(10, 2, lambda i: store(i))  # warm up
            await _drained(endpoint, set(sent_at), 60)
            for i in range(args.n):
                rid = await store(i)
                quiet.append(rid)
                await _drained(endpoint, {rid}, 30)
            counter = iter(range(10**6, 10**9))

            async def store_loaded(_: int) -> None:
                loaded.append(await store(next(counter)))

            await run_pool(args.load, args.concurrency, store_loaded)
            await _drained(endpoint, set(loaded), 120)

            # Held results: queued for their expiry, delivered by the worker then.
            expiries: dict[str, datetime] = {}
            for i in range(args.holds):
                at = datetime.now(UTC) + timedelta(seconds=2)
                rid = await store(i, hold(at))
                expiries[rid] = at
                await _drained(endpoint, {rid}, 30)
                if rid in endpoint.wall:
                    expiry_lag.append((endpoint.wall[rid] - at).total_seconds())
            early = [
                r for r, at in expiries.items() if r in endpoint.wall and endpoint.wall[r] < at
            ]

            # The patient's search vs the raw driver on the same documents.
            url = "/Observation"
            params = {"patient": JAMES, "_count": "50"}
            first = (await sponsor.get(url, params=params)).json()
            keys = [f"Observation/{e['resource']['id']}" for e in first.get("entry", [])]
            for i in range(args.searches * 2 + 20):
                if i % 2 == 0:
                    t0 = time.perf_counter()
                    r = await sponsor.get(url, params=params)
                    assert r.status_code == 200
                    (server_s if i >= 20 else []).append(time.perf_counter() - t0)
                else:
                    t0 = time.perf_counter()
                    await db.resources.find({"_id": {"$in": keys}}, {"res": 1}).to_list(None)
                    (raw_s if i >= 20 else []).append(time.perf_counter() - t0)
            # The clause alone on the database: the compartment query with and without it.
            plain = {"rt": "Observation", "comp": JAMES}
            for i in range(args.searches * 2 + 20):
                filt = (
                    plain if i % 2 == 0 else {**plain, "ak.r": {"$not": {"$gt": datetime.now(UTC)}}}
                )
                t0 = time.perf_counter()
                await db.resources.find(filt, {"res": 1}).sort("lu", -1).limit(51).to_list(None)
                if i >= 20:
                    (plain_s if i % 2 == 0 else clause_s).append(time.perf_counter() - t0)
    finally:
        endpoint.close()
        await raw.drop_database(database)
        await raw.close()
        proc.terminate()
        proc.wait(timeout=60)

    def latencies(ids: list[str]) -> list[float]:
        return [endpoint.arrived[m] - sent_at[m] for m in ids if m in endpoint.arrived]

    where = "MONGODB_URI" if os.environ.get("MONGODB_URI") else "SecantusDB (embedded, memory)"
    print(f"n={args.n} load={args.load} concurrency={args.concurrency} database={where}")
    print(
        f"{'final result stored -> notification':<44}{'n':>6}{'p50 ms':>9}{'p99 ms':>9}{'lost':>6}"
    )
    for label, ids in (("one at a time", quiet), ("under load", loaded)):
        got = latencies(ids)
        print(
            f"{label:<44}{len(got):>6}{pct(got, 50):>9.0f}{pct(got, 99):>9.0f}{len(ids) - len(got):>6}"
        )
    print(
        f"{'hold expiry -> notification':<44}{len(expiry_lag):>6}{pct(expiry_lag, 50):>9.0f}"
        f"{pct(expiry_lag, 99):>9.0f}{args.holds - len(expiry_lag):>6}"
        f"  (before the expiry: {len(early)})"
    )
    s50, r50 = statistics.median(server_s) * 1000, statistics.median(raw_s) * 1000
    print(
        f"patient Observation search (release clause) p50 {s50:.1f} ms, raw find of the same "
        f"{len(keys)} documents p50 {r50:.1f} ms, ratio {s50 / r50:.1f}"
    )
    p50, c50 = statistics.median(plain_s) * 1000, statistics.median(clause_s) * 1000
    print(
        f"raw compartment query (rt, comp, newest 51) p50 {p50:.1f} ms, with the release "
        f"clause {c50:.1f} ms, ratio {c50 / p50:.2f}"
    )
    print(f"duplicate deliveries: {endpoint.duplicates}")


async def _search_only(args: argparse.Namespace, sponsor: httpx.AsyncClient, db: Any) -> None:
    """The patient's search alone (no topic needed: runs against an older checkout too)."""
    params = {"patient": JAMES, "_count": "50"}
    first = (await sponsor.get("/Observation", params=params)).json()
    keys = [f"Observation/{e['resource']['id']}" for e in first.get("entry", [])]
    server_s: list[float] = []
    raw_s: list[float] = []
    for i in range(args.searches * 2 + 20):
        t0 = time.perf_counter()
        if i % 2 == 0:
            r = await sponsor.get("/Observation", params=params)
            assert r.status_code == 200
        else:
            await db.resources.find({"_id": {"$in": keys}}, {"res": 1}).to_list(None)
        if i >= 20:
            (server_s if i % 2 == 0 else raw_s).append(time.perf_counter() - t0)
    s50, r50 = statistics.median(server_s) * 1000, statistics.median(raw_s) * 1000
    print(
        f"patient Observation search p50 {s50:.1f} ms, raw find of the same {len(keys)} "
        f"documents p50 {r50:.1f} ms, ratio {s50 / r50:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--load", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--holds", type=int, default=10)
    parser.add_argument("--searches", type=int, default=200)
    parser.add_argument(
        "--search-only",
        action="store_true",
        help="only the patient's search (run with PYTHONPATH=<another checkout> to compare)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, benchmark_database(Path(tmp)) as (uri, _):
        asyncio.run(bench(args, uri, Path(tmp)))


if __name__ == "__main__":
    main()
