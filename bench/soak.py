"""A bounded mixed load on loopback, with bursts: no 5xx, no memory or connection growth.

    python -m bench.soak [--minutes 10] [--rate 20] [--burst-every 120] [--burst-s 30]
                         [--max-requests 200000]

Starts a database (SecantusDB in memory, or MONGODB_URI) and one real `fhir-server serve`
process on 127.0.0.1 with tokens required and the seed population (AUTH_REQUIRED=1,
AUTO_SEED=1), then for `--minutes` runs, paced at `--rate` requests/s by 6 workers:

- read:       GET Observation/<id> and Patient/<id> (system token)
- search:     GET Observation?patient=<id>&_count=10, newest first
- write:      POST Observation for the sponsor (his own user token, a real SMART login)
- everything: GET Patient/<id>/$everything?_count=50
- login:      a whole SMART login (login page, consent, code exchange), every 10 s

Every `--burst-every` seconds, for `--burst-s`, 24 more workers send unpaced searches, a
third of them `ne`-prefixed date searches on AuditEvent and Observation (whole-collection
scans on the embedded database, on a log that grows with every request: the suspects of the
hang in issue 10). It stops by itself: at the time limit or after `--max-requests`.

Reported: per interaction, count, p50/p99 ms and answers by status; 5xx (503 shed or
transient, and any other); the server's RSS at minute 2 and at the end (the bar: within 10%);
its TCP connections and the database's, sampled every 10 s (min/max); shed requests. Exit
code 1 if any 5xx other than 503 was seen or the RSS grew by more than 10%.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.audit import system_token
from bench.crud import benchmark_database, start_server

SPONSOR = "sponsor-james-carter"
WORKERS = 6
BURST_WORKERS = 24
LOGIN_EVERY_S = 10.0
SAMPLE_EVERY_S = 10.0


class Soak:
    def __init__(self, base: str, minutes: float, rate: float, max_requests: int) -> None:
        self.base = base
        self.origin = base.removesuffix("/fhir")
        self.deadline = time.monotonic() + minutes * 60
        self.started = time.monotonic()
        self.interval = WORKERS / rate  # each worker's pause between requests
        self.max_requests = max_requests
        self.sent = 0
        self.times: dict[str, list[float]] = defaultdict(list)
        self.status: dict[str, Counter[int | str]] = defaultdict(Counter)
        self.samples: list[tuple[float, int, int, int]] = []  # t, rss, server conns, db conns
        self.burst = asyncio.Event()
        self.obs: list[str] = []
        self.pats: list[str] = []

    def running(self) -> bool:
        return time.monotonic() < self.deadline and self.sent < self.max_requests

    async def call(
        self, kind: str, http: httpx.AsyncClient, method: str, url: str, **kw: Any
    ) -> Any:
        self.sent += 1
        start = time.perf_counter()
        try:
            r = await http.request(method, url, **kw)
        except httpx.HTTPError as exc:
            self.status[kind][type(exc).__name__] += 1
            return None
        self.times[kind].append(time.perf_counter() - start)
        self.status[kind][r.status_code] += 1
        return r

    async def setup(self, system: httpx.AsyncClient) -> None:
        bundle = (await system.get("/Observation", params={"_count": "200"})).json()
        for e in bundle.get("entry", []):
            res = e["resource"]
            self.obs.append(res["id"])
            ref = res.get("subject", {}).get("reference", "")
            if ref.startswith("Patient/"):
                self.pats.append(ref.split("/", 1)[1])
        self.pats = sorted(set(self.pats))
        assert self.obs and self.pats, "the seed has no Observations"

    async def worker(self, system: httpx.AsyncClient, user: httpx.AsyncClient, w: int) -> None:
        rnd = random.Random(w)
        while self.running():
            pick = rnd.random()
            pat = rnd.choice(self.pats)
            if pick < 0.35:
                url = f"/Observation/{rnd.choice(self.obs)}" if pick < 0.2 else f"/Patient/{pat}"
                await self.call("read", system, "GET", url)
            elif pick < 0.75:
                params = {"patient": pat, "_count": "10", "_sort": "-date"}
                await self.call("search", system, "GET", "/Observation", params=params)
            elif pick < 0.9:
                await self.call("write", user, "POST", "/Observation", json=observation())
            else:
                url = f"/Patient/{pat}/$everything"
                await self.call("everything", system, "GET", url, params={"_count": "50"})
            await asyncio.sleep(self.interval * rnd.uniform(0.5, 1.5))

    async def burster(self, system: httpx.AsyncClient, w: int) -> None:
        rnd = random.Random(1000 + w)
        while self.running():
            await self.burst.wait()
            if rnd.random() < 1 / 3:
                rt = rnd.choice(("AuditEvent", "Observation"))
                day = f"20{rnd.randint(10, 26)}-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}"
                await self.call(
                    "burst ne-date", system, "GET", f"/{rt}", params={"date": f"ne{day}"}
                )
            else:
                params = {"patient": rnd.choice(self.pats), "_count": "10"}
                await self.call("burst search", system, "GET", "/Observation", params=params)

    async def bursts(self, every: float, length: float) -> None:
        while self.running():
            await asyncio.sleep(min(every, max(0.0, self.deadline - time.monotonic())))
            if not self.running():
                break
            self.burst.set()
            await asyncio.sleep(length)
            self.burst.clear()
        self.burst.set()  # release the bursters so they see the end

    async def logins(self) -> None:
        while self.running():
            self.sent += 1
            start = time.perf_counter()
            try:
                await user_token(self.origin)
                self.status["login"][200] += 1
            except (AssertionError, httpx.HTTPError, KeyError) as exc:
                self.status["login"][type(exc).__name__] += 1
            self.times["login"].append(time.perf_counter() - start)
            await asyncio.sleep(LOGIN_EVERY_S)

    async def sampler(self, server_pid: int, db_pid: int | None) -> None:
        proc = psutil.Process(server_pid)
        db = psutil.Process(db_pid) if db_pid else None
        while self.running():
            conns = len(proc.net_connections(kind="tcp"))
            db_conns = len(db.net_connections(kind="tcp")) if db else -1
            t = time.monotonic() - self.started
            self.samples.append((t, proc.memory_info().rss, conns, db_conns))
            await asyncio.sleep(SAMPLE_EVERY_S)


def observation() -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "subject": {"reference": f"Patient/{SPONSOR}"},
        "effectiveDateTime": "2026-01-02T10:00:00Z",
        "valueQuantity": {
            "value": round(random.uniform(60, 90), 1),
            "unit": "kg",
            "system": "http://unitsofmeasure.org",
            "code": "kg",
        },
    }


async def user_token(origin: str) -> str:
    """The sponsor's token through the real login and consent pages."""
    from tests.integration.auth.conftest import authorize, exchange

    async with httpx.AsyncClient(base_url=origin, timeout=60) as browser:
        auth = await authorize(
            browser, "sponsor", "openid fhirUser user/*.cruds", aud=f"{origin}/fhir"
        )
        r = await exchange(browser, auth)
        r.raise_for_status()
        return str(r.json()["access_token"])


def pct(xs: list[float], q: float) -> float:
    if len(xs) < 2:
        return xs[0] * 1000 if xs else float("nan")
    return statistics.quantiles(xs, n=100, method="inclusive")[int(q) - 1] * 1000


async def run(args: argparse.Namespace, uri: str, db_pid: int | None, workdir: Path) -> int:
    database = f"soak_{uuid.uuid4().hex[:8]}"
    proc, base = start_server(
        uri, database, workdir / "server.log", {"AUTH_REQUIRED": "1", "AUTO_SEED": "1"}
    )
    origin = base.removesuffix("/fhir")
    try:
        async with (
            httpx.AsyncClient(base_url=base, timeout=60) as system,
            httpx.AsyncClient(base_url=base, timeout=60) as user,
        ):
            system.headers["Authorization"] = f"Bearer {await system_token(system, origin)}"
            user.headers["Authorization"] = f"Bearer {await user_token(origin)}"
            user.headers["Content-Type"] = "application/fhir+json"
            soak = Soak(base, args.minutes, args.rate, args.max_requests)
            await soak.setup(system)
            soak.started = time.monotonic()
            soak.deadline = soak.started + args.minutes * 60
            await asyncio.gather(
                *(soak.worker(system, user, w) for w in range(WORKERS)),
                *(soak.burster(system, w) for w in range(BURST_WORKERS)),
                soak.bursts(args.burst_every, args.burst_s),
                soak.logins(),
                soak.sampler(proc.pid, db_pid),
            )
            elapsed = time.monotonic() - soak.started
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return report(soak, elapsed, args)


def report(soak: Soak, elapsed: float, args: argparse.Namespace) -> int:
    where = "MONGODB_URI" if os.environ.get("MONGODB_URI") else "SecantusDB (embedded, in memory)"
    print(
        f"soak: {elapsed / 60:.1f} min, {soak.sent} requests, rate {args.rate}/s paced + bursts "
        f"of {args.burst_s:.0f} s every {args.burst_every:.0f} s, database={where}"
    )
    print(f"{'interaction':<16}{'count':>8}{'p50 ms':>9}{'p99 ms':>10}   answers")
    fives = Counter()
    for kind in sorted(soak.status):
        xs = soak.times[kind]
        answers = ", ".join(f"{k}: {v}" for k, v in sorted(soak.status[kind].items(), key=str))
        print(f"{kind:<16}{len(xs):>8}{pct(xs, 50):>9.1f}{pct(xs, 99):>10.1f}   {answers}")
        for k, v in soak.status[kind].items():
            if isinstance(k, int) and k >= 500:
                fives[k] += v
    print(f"5xx: {dict(fives) or 0}")
    at2 = [s for s in soak.samples if s[0] >= 120] or soak.samples
    rss2, rss_end = at2[0][1], soak.samples[-1][1]
    growth = (rss_end - rss2) / rss2
    conns = [s[2] for s in soak.samples]
    db_conns = [s[3] for s in soak.samples]
    print(
        f"server RSS: {rss2 / 2**20:.0f} MiB at {at2[0][0] / 60:.1f} min, "
        f"{rss_end / 2**20:.0f} MiB at the end ({growth:+.1%}); "
        f"server TCP connections min/max {min(conns)}/{max(conns)} "
        f"(first {conns[0]}, last {conns[-1]}); "
        f"database TCP connections min/max {min(db_conns)}/{max(db_conns)}"
    )
    bad = any(k != 503 for k in fives) or growth > 0.10
    return 1 if bad else 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--burst-every", type=float, default=120.0)
    parser.add_argument("--burst-s", type=float, default=30.0)
    parser.add_argument("--max-requests", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, benchmark_database(Path(tmp)) as (uri, db_pid):
        code = asyncio.run(run(args, uri, db_pid, Path(tmp)))
    raise SystemExit(code)


if __name__ == "__main__":
    main()
