"""A patient's MedicationRequest search with the eligibility view, vs the raw driver.

With tokens required and the seed population (AUTH_REQUIRED=1, AUTO_SEED=1, AUDIT=0): the
sponsor (token from the real login pages) searches `MedicationRequest?subject=<himself>`,
every entry carrying the eligibility extension computed on read (docs/portal.md,
"Prescriptions"); beside it, alternating, the raw driver's `find` of the very documents (by
`_id`) the server answered. The goal is a p50 ratio within 1.5x. `--copies` adds that many
extra prescriptions for him first (through the server, as his PCM), so the page is not tiny.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from bench.crud import benchmark_database, start_server
from bench.notifications import login

JAMES = "Patient/sponsor-james-carter"
EXTENSION = "https://mhs.example.org/fhir/StructureDefinition/medication-eligibility"


def prescription(i: int) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "subject": {"reference": JAMES},
        "medicationCodeableConcept": {"text": f"bench medication {i}"},
        "dispenseRequest": {
            "numberOfRepeatsAllowed": i % 4,
            "validityPeriod": {
                "start": "2026-01-01",
                "end": "2026-06-01" if i % 3 else "2099-01-01",
            },
        },
    }


async def bench(args: argparse.Namespace, uri: str, workdir: Path) -> None:
    database = f"bench_{uuid.uuid4().hex[:8]}"
    env = {"AUTH_REQUIRED": "1", "AUTO_SEED": "1", "AUDIT": "0", "DATA_DIR": str(workdir / "data")}
    proc, base = start_server(uri, database, workdir / "server.log", env)
    origin = base.removesuffix("/fhir")
    raw: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, w="majority")
    db = raw[database]
    server_s: list[float] = []
    raw_s: list[float] = []
    try:
        async with (
            httpx.AsyncClient(base_url=base, timeout=120) as sponsor,
            httpx.AsyncClient(base_url=base, timeout=120) as kim,
        ):
            sponsor.headers["Authorization"] = f"Bearer {await login(origin, 'sponsor')}"
            kim.headers["Authorization"] = f"Bearer {await login(origin, 'dr.rachel.kim')}"
            for i in range(args.copies):
                r = await kim.post("/MedicationRequest", json=prescription(i))
                assert r.status_code == 201, r.text
            params = {"subject": JAMES, "_count": "100"}
            first = (await sponsor.get("/MedicationRequest", params=params)).json()
            entries = first.get("entry", [])
            assert entries and all(
                any(e["url"] == EXTENSION for e in x["resource"].get("extension", []))
                for x in entries
            ), "every entry carries the eligibility"
            keys = [f"MedicationRequest/{x['resource']['id']}" for x in entries]
            for i in range(args.samples * 2 + 20):
                t0 = time.perf_counter()
                if i % 2 == 0:
                    r = await sponsor.get("/MedicationRequest", params=params)
                    assert r.status_code == 200
                    (server_s if i >= 20 else []).append(time.perf_counter() - t0)
                else:
                    await db.resources.find({"_id": {"$in": keys}}, {"res": 1}).to_list(None)
                    (raw_s if i >= 20 else []).append(time.perf_counter() - t0)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        await raw.drop_database(database)
        await raw.close()
    s50, r50 = statistics.median(server_s) * 1000, statistics.median(raw_s) * 1000
    print(
        f"patient MedicationRequest search with eligibility ({len(keys)} entries) p50 "
        f"{s50:.1f} ms, raw find of the same documents p50 {r50:.1f} ms, ratio {s50 / r50:.2f} "
        "(goal <= 1.5)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--copies", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, benchmark_database(Path(tmp)) as (uri, _):
        asyncio.run(bench(args, uri, Path(tmp)))


if __name__ == "__main__":
    main()
