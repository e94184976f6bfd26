"""Secure messages with notifications: the send rate through HTTP beside the raw driver,
and the time from a send to its rest-hook delivery.

    python -m bench.notifications [--n 200] [--rounds 4] [--concurrency 8] [--latency 60]
                                  [--audit]

Starts a database (SecantusDB in memory, or MONGODB_URI) and one `fhir-server serve` on it
with tokens required and the seed population (AUTH_REQUIRED=1, AUTO_SEED=1; AUDIT=0 unless
`--audit`; no SMTP_URL, so emails go to the outbox folder of the run's DATA_DIR). The
sponsor subscribes (id-only rest-hook) to "message received by patient" with an endpoint in
this process; his PCM, with a token from the real login pages, sends him messages.

- send rate: `POST Communication` (validation, the write rules, the access policy, the
  message stored with its history version and its notifications queued, one transaction)
  vs the raw driver inserting the same documents the server stored for one message (the
  current and history documents and the queued notifications, under fresh ids, in one
  transaction per message; queued copies are marked so no worker delivers them), in
  alternating rounds after a warm-up of each; medians of the rounds' rates, and the ratio.
- delivery latency: from just before each POST to its notification's arrival at the
  endpoint, p50/p99, for messages sent one at a time (`--latency` of them) and for those
  sent during the rate rounds (under load). Goal: p99 under 1 s on loopback.
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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from bench.crud import benchmark_database, run_pool, start_server
from fhir_server.db.embedded import free_port
from fhir_server.notify import backport
from fhir_server.notify.table import load_table

JAMES = "Patient/sponsor-james-carter"
ROOT = Path(__file__).resolve().parents[1]
CLINICIAN = "dr.rachel.kim"


class Endpoint:
    """The rest-hook receiver: the arrival time of each event, by the message's id."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.arrived: dict[str, float] = {}
        self.duplicates = 0
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                now = time.perf_counter()
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                if len(body.get("entry", [])) > 1:
                    mid = body["entry"][1]["fullUrl"].rsplit("/", 1)[-1]
                    if mid in endpoint.arrived:
                        endpoint.duplicates += 1
                    endpoint.arrived.setdefault(mid, now)
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


async def login(origin: str, who: str) -> str:
    """A token through the real login and consent pages."""
    from tests.integration.auth.conftest import authorize, exchange

    async with httpx.AsyncClient(base_url=origin, timeout=60) as browser:
        auth = await authorize(browser, who, "openid fhirUser user/*.cruds", aud=f"{origin}/fhir")
        r = await exchange(browser, auth)
        r.raise_for_status()
        return str(r.json()["access_token"])


def message(i: int, thread: str) -> dict[str, Any]:
    return {
        "resourceType": "Communication",
        "status": "completed",
        "partOf": [{"reference": thread}],
        "subject": {"reference": JAMES},
        "recipient": [{"reference": JAMES}],
        "payload": [{"contentString": f"Benchmark message {i}: please call the clinic."}],
    }


def header() -> dict[str, Any]:
    """A thread header (profiles/portal/messaging.json): the messages go in it."""
    table = json.loads((ROOT / "profiles/portal/messaging.json").read_text())
    code = next(iter(table["categories"]["codes"]))
    return {
        "resourceType": "Communication",
        "status": table["header"]["open_status"],
        "category": [{"coding": [{"system": table["categories"]["system"], "code": code}]}],
        "subject": {"reference": JAMES},
        "recipient": [{"reference": JAMES}],
        "topic": {"text": "Benchmark"},
    }


def pct(xs: list[float], q: int) -> float:
    if not xs:
        return float("nan")
    if len(xs) < 2:
        return xs[0] * 1000
    return statistics.quantiles(xs, n=100, method="inclusive")[q - 1] * 1000


async def bench(args: argparse.Namespace, uri: str, workdir: Path) -> None:
    database = f"bench_{uuid.uuid4().hex[:8]}"
    env = {
        "AUTH_REQUIRED": "1",
        "AUTO_SEED": "1",
        "AUDIT": "1" if args.audit else "0",
        "DATA_DIR": str(workdir / "data"),
        "QUERY_MAX_TIME_MS": "120000",
    }
    proc, base = start_server(uri, database, workdir / "server.log", env)
    origin = base.removesuffix("/fhir")
    raw: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, w="majority")
    db = raw[database]
    endpoint = Endpoint()
    topic = load_table().topics[0].url
    sent_at: dict[str, float] = {}
    answered: dict[str, float] = {}
    try:
        async with (
            httpx.AsyncClient(base_url=base, timeout=120) as sponsor,
            httpx.AsyncClient(base_url=base, timeout=120) as kim,
        ):
            sponsor.headers["Authorization"] = f"Bearer {await login(origin, 'sponsor')}"
            kim.headers["Authorization"] = f"Bearer {await login(origin, CLINICIAN)}"
            sub = {
                "resourceType": "Subscription",
                "status": "requested",
                "reason": "benchmark",
                "criteria": topic,
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

            r = await kim.post("/Communication", json=header())
            assert r.status_code == 201, r.text
            thread = f"Communication/{r.json()['id']}"

            async def send(i: int) -> None:
                t0 = time.perf_counter()
                r = await kim.post("/Communication", json=message(i, thread))
                assert r.status_code == 201, r.text
                sent_at[r.json()["id"]] = t0
                answered[r.json()["id"]] = time.perf_counter()

            # One message's stored documents: what the raw side inserts copies of.
            await send(0)
            mid = next(iter(sent_at))
            current = await db.resources.find_one({"_id": f"Communication/{mid}"})
            history = await db.history.find_one({"rt": "Communication", "id": mid})
            queued = await db.notifications.find({"created": {"$gte": current["lu"]}}).to_list(None)
            assert current and history and queued, "the sample message's documents"

            async def raw_send(i: int) -> None:
                rid = uuid.uuid4().hex
                cur = {**current, "_id": f"Communication/{rid}", "id": rid}
                hist = {k: v for k, v in history.items() if k != "_id"} | {"id": rid}
                items = [
                    {**q, "_id": uuid.uuid4().hex, "state": "bench-copy", "focus": cur["_id"]}
                    for q in queued
                ]
                async with raw.start_session() as s, await s.start_transaction():
                    await db.resources.insert_one(cur, session=s)
                    await db.history.insert_one(hist, session=s)
                    await db.notifications.insert_many(items, session=s)

            counter = iter(range(1, 10**9))
            await run_pool(20, args.concurrency, lambda _: send(next(counter)))  # warm up
            await run_pool(20, args.concurrency, raw_send)
            rates: dict[str, list[float]] = {"server": [], "raw": []}
            for r_ in range(args.rounds):
                order = ("server", "raw") if r_ % 2 == 0 else ("raw", "server")
                for side in order:
                    if side == "server":
                        rate = await run_pool(
                            args.n, args.concurrency, lambda _: send(next(counter))
                        )
                    else:
                        rate = await run_pool(args.n, args.concurrency, raw_send)
                    rates[side].append(rate)
            loaded = set(sent_at)
            # Let the queue drain, then one at a time.
            await _drained(endpoint, loaded, 120)
            quiet: list[str] = []
            for i in range(args.latency):
                before = set(sent_at)
                await send(10**6 + i)
                (new,) = set(sent_at) - before
                quiet.append(new)
                await _drained(endpoint, {new}, 30)
                await asyncio.sleep(0.05)
    finally:
        endpoint.close()
        await raw.drop_database(database)
        await raw.close()
        proc.terminate()
        proc.wait(timeout=60)

    def latencies(ids: set[str] | list[str]) -> list[float]:
        return [endpoint.arrived[m] - sent_at[m] for m in ids if m in endpoint.arrived]

    under_load, at_rest = latencies(loaded), latencies(quiet)
    srv, rw = statistics.median(rates["server"]), statistics.median(rates["raw"])
    where = "MONGODB_URI" if os.environ.get("MONGODB_URI") else "SecantusDB (embedded, memory)"
    print(
        f"n={args.n} rounds={args.rounds} concurrency={args.concurrency} database={where} "
        f"audit={'on' if args.audit else 'off'}"
    )
    print(f"{'messages sent per second':<40}{'server':>9}{'raw':>9}{'ratio':>7}")
    print(f"{'POST Communication (clinician token)':<40}{srv:>9.1f}{rw:>9.1f}{srv / rw:>7.2f}")
    print(
        f"  rounds: server {[round(x, 1) for x in rates['server']]}, raw {[round(x, 1) for x in rates['raw']]}"
    )
    print(f"{'send -> rest-hook delivery':<40}{'n':>6}{'p50 ms':>9}{'p99 ms':>9}{'lost':>6}")
    for label, ids, got in (
        ("one at a time", quiet, at_rest),
        ("during the rate rounds", loaded, under_load),
    ):
        print(
            f"{label:<40}{len(got):>6}{pct(got, 50):>9.0f}{pct(got, 99):>9.0f}{len(ids) - len(got):>6}"
        )
    posts = [answered[m] - sent_at[m] for m in quiet]
    after = [endpoint.arrived[m] - answered[m] for m in quiet if m in endpoint.arrived]
    print(
        f"one at a time: the POST itself p50 {pct(posts, 50):.0f} ms; from its answer to the "
        f"delivery p50 {pct(after, 50):.0f} ms, p99 {pct(after, 99):.0f} ms"
    )
    print(f"duplicate deliveries: {endpoint.duplicates}")


async def _drained(endpoint: Endpoint, ids: set[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    # The endpoint's thread fills `arrived`: polled, as no event loop is there to signal.
    while time.monotonic() < deadline and not ids <= set(endpoint.arrived):  # noqa: ASYNC110
        await asyncio.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--latency", type=int, default=60, help="messages sent one at a time")
    parser.add_argument("--audit", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, benchmark_database(Path(tmp)) as (uri, _):
        asyncio.run(bench(args, uri, Path(tmp)))


if __name__ == "__main__":
    main()
