"""`Appointment/$find` over 90 days of one clinic's Slots beside the raw driver's queries for
the same Slots, and `$book` latency under 50 contenders per Slot.

    python -m bench.scheduling [--days 90] [--per-day 16] [--samples 30] [--rounds 4]

Starts a database (SecantusDB in memory, or MONGODB_URI) and a real `fhir-server serve`
process on it (tokens off: the staff view, so every Slot in the window qualifies), loads
one clinic's Schedule and `--days` x `--per-day` Slots in one transaction Bundle, then:

- $find: `GET Appointment/$find?patient=..&location=..&end=<+days>&_count=500`, p50 of
  `--samples`, alternating with the raw driver running the server's own two queries (the
  clinic's Schedules by actor, then their free or held Slots in the window: `parse_search`
  + `search_filter`, built outside the timing) and fetching the same documents. Goal:
  server p50 within 1.5x of raw.
- $book: `--rounds` Slots, each booked by 50 different patients at once (50 parallel
  POSTs): p50/p99 of every answer's latency, and the answers (one 201 per Slot, 49 x 409).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from bench.crud import benchmark_database, start_server
from fhir_server.portal.scheduling.table import load_table
from fhir_server.search.execute import search_filter
from fhir_server.search.parse import parse_search
from fhir_server.search.registry import Registry
from fhir_server.storage.store import instant

TABLE = load_table()
CLINIC = TABLE.clinics[0]
VISIT = CLINIC.visit_types[0]
LOCATION = sorted(CLINIC.locations)[0]
CONTENDERS = 50


def _entry(res: dict[str, Any]) -> dict[str, Any]:
    return {
        "resource": res,
        "request": {"method": "PUT", "url": f"{res['resourceType']}/{res['id']}"},
    }


def _setup_bundle(days: int, per_day: int, t0: datetime) -> dict[str, Any]:
    entries = [
        _entry({"resourceType": "Location", "id": LOCATION.split("/")[1], "status": "active"}),
        _entry({"resourceType": "Practitioner", "id": "bench-doc"}),
        _entry(
            {
                "resourceType": "Schedule",
                "id": "bench-schedule",
                "active": True,
                "actor": [{"reference": "Practitioner/bench-doc"}, {"reference": LOCATION}],
            }
        ),
        *(_entry({"resourceType": "Patient", "id": f"bench-p{i}"}) for i in range(CONTENDERS)),
    ]
    for d in range(days):
        for k in range(per_day):
            start = t0 + timedelta(days=d, minutes=30 * k)
            entries.append(
                _entry(
                    {
                        "resourceType": "Slot",
                        "id": f"bench-slot-{d}-{k}",
                        "schedule": {"reference": "Schedule/bench-schedule"},
                        "status": "free",
                        "serviceType": [TABLE.concept(VISIT)],
                        "start": instant(start),
                        "end": instant(start + timedelta(minutes=30)),
                    }
                )
            )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))]


async def bench(
    uri: str, days: int, per_day: int, samples: int, rounds: int, workdir: Path
) -> None:
    database = f"bench_{uuid.uuid4().hex[:8]}"
    proc, base = start_server(uri, database, workdir / "server.log")
    raw: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, w="majority")
    db = raw[database]
    reg = Registry.load_default()
    t0 = (datetime.now(UTC) + timedelta(days=1)).replace(hour=13, minute=0, second=0, microsecond=0)
    t1 = t0 + timedelta(days=days)
    try:
        async with httpx.AsyncClient(
            base_url=base, timeout=300, headers={"Content-Type": "application/fhir+json"}
        ) as http:
            r = await http.post("", json=_setup_bundle(days, per_day, t0))
            assert r.status_code == 200, r.text[:500]
            params = {"patient": "Patient/bench-p0", "location": LOCATION, "start": instant(t0),
                      "end": instant(t1), "_count": "500"}  # fmt: skip
            sched_q = parse_search("Schedule", [("actor", LOCATION), ("active", "true")], reg)
            sched_f = await search_filter(db, reg, sched_q)
            slot_q = parse_search(
                "Slot",
                [("schedule", "Schedule/bench-schedule"), ("status", "free,busy-tentative"),
                 ("start", f"ge{instant(t0)}"), ("start", f"le{instant(t1)}")],
                reg,
            )  # fmt: skip
            slot_f = await search_filter(db, reg, slot_q)
            proj = {"id": 1, "res": 1}

            async def server_find() -> int:
                r = await http.get("/Appointment/$find", params=params)
                assert r.status_code == 200, r.text[:300]
                return int(r.json()["total"])

            async def raw_find() -> int:
                await db.resources.find(sched_f, proj).to_list(None)
                return len(await db.resources.find(slot_f, proj).to_list(None))

            found, raw_found = await server_find(), await raw_find()  # warm-up, and agreement
            times: dict[str, list[float]] = {"server": [], "raw": []}
            for i in range(samples):
                order = (("server", server_find), ("raw", raw_find))
                for name, fn in order if i % 2 == 0 else order[::-1]:
                    start = time.perf_counter()
                    await fn()
                    times[name].append(time.perf_counter() - start)

            book_times: list[float] = []
            answers: list[int] = []
            for rnd in range(rounds):
                slot = f"Slot/bench-slot-{days // 2}-{rnd}"

                async def book(i: int, slot: str = slot) -> None:
                    body = {
                        "resourceType": "Appointment",
                        "status": "proposed",
                        "serviceType": [TABLE.concept(VISIT)],
                        "slot": [{"reference": slot}],
                        "participant": [
                            {
                                "actor": {"reference": f"Patient/bench-p{i}"},
                                "status": "needs-action",
                            }
                        ],
                    }
                    start = time.perf_counter()
                    r = await http.post("/Appointment/$book", json=body)
                    book_times.append(time.perf_counter() - start)
                    answers.append(r.status_code)

                await asyncio.gather(*(book(i) for i in range(CONTENDERS)))
    finally:
        await raw.drop_database(database)
        await raw.close()
        proc.terminate()
        proc.wait(timeout=30)

    where = "MONGODB_URI" if os.environ.get("MONGODB_URI") else "SecantusDB (embedded)"
    s50, r50 = statistics.median(times["server"]), statistics.median(times["raw"])
    print(f"database={where} slots={days * per_day} over {days} days, samples={samples}")
    print(f"$find: {found} proposed (of {raw_found} Slots the raw queries fetch, _count 500)")
    print(
        f"  server p50 {s50 * 1000:.1f} ms   raw p50 {r50 * 1000:.1f} ms   ratio {s50 / r50:.2f} (goal <= 1.5)"
    )
    won = answers.count(201) + answers.count(200)
    print(f"$book: {rounds} Slots x {CONTENDERS} contenders -> {won} booked, {answers.count(409)} x 409, "
          f"other {len(answers) - won - answers.count(409)}")  # fmt: skip
    print(
        f"  p50 {_pct(book_times, 0.5) * 1000:.0f} ms   p99 {_pct(book_times, 0.99) * 1000:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--per-day", type=int, default=16)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, benchmark_database(Path(tmp)) as (uri, _):
        asyncio.run(bench(uri, args.days, args.per_day, args.samples, args.rounds, Path(tmp)))


if __name__ == "__main__":
    main()
