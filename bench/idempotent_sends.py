"""Patient messages sent through HTTP, plain and idempotent, beside the raw driver, as ratios.

    python -m bench.idempotent_sends [--n 200] [--concurrency 4] [--rounds 3]

Starts a database (SecantusDB in memory, or MONGODB_URI) and a real `fhir-server serve`
process on it (tokens off: token checks are not in these figures), then, in alternating
rounds, POSTs messages from a patient to a care team, each of which also creates its
response-time Task in the same transaction (fhir_server/portal/response_times.py):

- plain:            POST /fhir/Communication
- Idempotency-Key:  the same with a fresh key per message (a claim read, then moved on)
- If-None-Exist:    the same with a fresh identifier and its condition (claim + search)
- raw:              the raw driver's insert_one of the same stored documents (the message
                    and its Task, current and history: four inserts per message)

and one retry storm: 20 parallel copies of one keyed send (one message made, 19 replays).
The database's own speed cancels out of the ratios; absolute rates depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from bench.crud import benchmark_database, run_pool, start_server

TEAM = "CareTeam/bench-team"
PATIENT = "Patient/bench-patient"


def message(i: int, thread: str, ident: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Communication",
        "status": "completed",
        "partOf": [{"reference": thread}],
        "subject": {"reference": PATIENT},
        "sender": {"reference": PATIENT},
        "recipient": [{"reference": TEAM}],
        "sent": "2026-11-25T20:00:00Z",
        "payload": [{"contentString": f"Bench message {i}: is the clinic open on Friday?"}],
    }
    if ident:
        body["identifier"] = [{"system": "urn:ietf:rfc:3986", "value": ident}]
    return body


async def bench(uri: str, n: int, concurrency: int, rounds: int, workdir: Path) -> None:
    database = f"bench_{uuid.uuid4().hex[:8]}"
    proc, base = start_server(uri, database, workdir / "server.log")
    raw: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, w="majority")
    db = raw[database]
    rates: dict[str, list[float]] = {"plain": [], "key": [], "ine": [], "raw": []}
    try:
        async with httpx.AsyncClient(
            base_url=base, timeout=120, headers={"Content-Type": "application/fhir+json"}
        ) as http:
            header = {
                "resourceType": "Communication",
                "status": "in-progress",
                "topic": {"text": "bench"},
                "subject": {"reference": PATIENT},
                "recipient": [{"reference": TEAM}],
            }
            r = await http.post("/Communication", json=header)
            thread = f"Communication/{r.json()['id']}"

            async def send(i: int, kind: str) -> None:
                headers = {"Prefer": "return=minimal"}
                ident = None
                if kind == "key":
                    headers["Idempotency-Key"] = f'"{uuid.uuid4()}"'
                elif kind == "ine":
                    ident = f"urn:uuid:{uuid.uuid4()}"
                    headers["If-None-Exist"] = f"identifier=urn:ietf:rfc:3986|{ident}"
                r = await http.post(
                    "/Communication", json=message(i, thread, ident), headers=headers
                )
                assert r.status_code == 201, r.text

            for i in range(20):  # warm up
                await send(i, "plain")
            docs = {
                rt: [d async for d in db.resources.find({"rt": rt}, limit=20)]
                for rt in ("Communication", "Task")
            }
            hist = {
                rt: [d async for d in db.history.find({"rt": rt}, limit=20)]
                for rt in ("Communication", "Task")
            }

            async def raw_send(i: int) -> None:
                tag = uuid.uuid4().hex
                for rt in ("Communication", "Task"):
                    await db.history.insert_one(hist[rt][i % 20] | {"_id": f"raw-{tag}-{rt}"})
                    await db.resources.insert_one(docs[rt][i % 20] | {"_id": f"raw-{tag}-{rt}"})

            for _ in range(rounds):
                for kind in ("plain", "key", "ine"):
                    rates[kind].append(await run_pool(n, concurrency, lambda i, k=kind: send(i, k)))
                rates["raw"].append(await run_pool(n, concurrency, raw_send))

            # The retry storm: 20 copies of one keyed send at once.
            key = f'"{uuid.uuid4()}"'
            body = message(0, thread)
            start = time.perf_counter()
            answers = await asyncio.gather(
                *(
                    http.post("/Communication", json=body, headers={"Idempotency-Key": key})
                    for _ in range(20)
                )
            )
            storm = time.perf_counter() - start
            made = {a.json()["id"] for a in answers}
            start = time.perf_counter()
            await send(0, "key")
            single = time.perf_counter() - start
    finally:
        await raw.drop_database(database)
        await raw.close()
        proc.terminate()
        proc.wait(timeout=30)

    med = {k: statistics.median(v) for k, v in rates.items()}
    where = "MONGODB_URI" if os.environ.get("MONGODB_URI") else "SecantusDB (embedded)"
    print(f"n={n} concurrency={concurrency} rounds={rounds} database={where}")
    print(f"{'send':<18}{'msgs/s':>9}{'x raw':>8}{'x plain':>9}   per round")
    for kind, label in (("plain", "plain"), ("key", "Idempotency-Key"), ("ine", "If-None-Exist")):
        rounds_s = " ".join(f"{x:.0f}" for x in rates[kind])
        print(
            f"{label:<18}{med[kind]:>9.1f}{med[kind] / med['raw']:>8.2f}"
            f"{med[kind] / med['plain']:>9.2f}   {rounds_s}"
        )
    print(f"{'raw (4 inserts)':<18}{med['raw']:>9.1f}")
    print(
        f"retry storm: 20 copies of one keyed send -> {len(made)} message(s), "
        f"{storm * 1000:.0f} ms for all answers vs {single * 1000:.0f} ms for one send"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, benchmark_database(Path(tmp)) as (uri, _):
        asyncio.run(bench(uri, args.n, args.concurrency, args.rounds, Path(tmp)))


if __name__ == "__main__":
    main()
