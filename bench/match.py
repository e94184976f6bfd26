"""`Patient/$match` p50 on 10,000 Patients (issue 15).

    python -m bench.match [--size 10000] [--samples 200] [--concurrency 1]

Starts a database (SecantusDB in memory, or MONGODB_URI), writes `--size` synthetic
Patients in the server's stored shape (`ResourceStore.document`: index entries and
compartments as the server computes them; `insert_many`), then one `fhir-server serve` on it
(`AUTH_REQUIRED=0`), and times `$match` calls whose inputs are stored Patients changed the
way the identity-matching cases change them, in turn: exact (EDIPI, SSN, demographics), a
typo in the names with the birth date and phone, and no identifiers (names, birth date,
gender, address). Birth dates repeat (about 10,000 / 365 / 60 Patients share one), so
the birth-date block returns a realistic handful of candidates. Reported: p50 and p95 per
kind and overall, and the raw driver's indexed `find` of one identifier key for scale.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from bench.crud import benchmark_database, start_server
from fhir_server.search.extract import compartments, index_entries
from fhir_server.search.registry import Registry
from fhir_server.storage.store import ResourceStore

Doc = dict[str, Any]
EDIPI = "urn:oid:2.16.840.1.113883.3.42.10001.100001.12"
SSN = "http://hl7.org/fhir/sid/us-ssn"
FAMILIES = ["Carter", "Nguyen", "Garcia", "Smith", "Johnson", "Okafor", "Peña", "Müller",
            "Brooks", "Alvarez", "Kim", "Patel", "Williams", "Brown", "Davis", "Lopez"]  # fmt: skip
GIVENS = ["James", "Maria", "Emma", "Daniel", "Sophia", "Liam", "Ana", "Robert", "Karen",
          "Marcus", "Eleanor", "Samuel", "Grace", "Luis", "Chloé", "Noah"]  # fmt: skip


def patient(i: int, rng: random.Random) -> Doc:
    born = date(1940, 1, 1) + timedelta(days=rng.randrange(60 * 365))
    return {
        "resourceType": "Patient",
        "id": f"bench-match-{i}",
        "identifier": [
            {"system": EDIPI, "value": f"{4000000000 + i}"},
            {"system": SSN, "value": f"9{i:08d}"},
        ],
        "name": [{"family": rng.choice(FAMILIES), "given": [rng.choice(GIVENS)]}],
        "gender": rng.choice(["male", "female"]),
        "birthDate": born.isoformat(),
        "address": [{"line": [f"{rng.randrange(1, 999)} Main St"], "postalCode": "23461"}],
        "telecom": [{"system": "phone", "value": f"757-555-{i % 10000:04d}"}],
    }


def _typo(word: str) -> str:
    return word[:-2] + word[-1] + word[-2] if len(word) > 3 else word + "e"


def probe(p: Doc, kind: str) -> Doc:
    if kind == "exact":
        return {k: v for k, v in p.items() if k != "id"}
    name = p["name"][0]
    if kind == "typo":
        return {
            "resourceType": "Patient",
            "name": [{"family": _typo(name["family"]), "given": [_typo(name["given"][0])]}],
            "birthDate": p["birthDate"],
            "telecom": p["telecom"],
        }
    return {k: v for k, v in p.items() if k not in ("id", "identifier", "telecom")}


async def load(db: Any, size: int) -> list[Doc]:
    registry = Registry.load_default()

    def indexer(resource: Doc) -> tuple[Doc, list[str]]:
        return index_entries(resource, registry), compartments(resource, registry)

    store = ResourceStore(db, indexer)
    rng = random.Random(15)
    patients = [patient(i, rng) for i in range(size)]
    for start in range(0, size, 1000):
        docs, hist = [], []
        for p in patients[start : start + 1000]:
            doc = store.document("Patient", p["id"], 1, p)
            h = {k: doc[k] for k in ("rt", "id", "vid", "lu", "comp", "sk", "res")}
            h["_id"], h["method"] = f"{doc['_id']}/1", "POST"
            docs.append(doc)
            hist.append(h)
        await db.resources.insert_many(docs, ordered=False)
        await db.history.insert_many(hist, ordered=False)
    return patients


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def run(size: int, samples: int, workdir: Path) -> None:
    with benchmark_database(workdir) as (uri, _):
        database = f"bench_match_{uuid.uuid4().hex[:8]}"
        client: AsyncMongoClient[Doc] = AsyncMongoClient(uri)
        db = client[database]
        # The server first, on the empty database: it builds its indexes at start-up, and
        # the Patients then go into indexed collections.
        proc, base = start_server(uri, database, workdir / "server.log")
        try:
            t0 = time.perf_counter()
            patients = await load(db, size)
            print(f"loaded {size} Patients in {time.perf_counter() - t0:.1f} s")
            rng = random.Random(7)
            times: dict[str, list[float]] = {"exact": [], "typo": [], "no identifiers": []}
            found = {k: 0 for k in times}
            async with httpx.AsyncClient(base_url=base, timeout=60) as http:
                kinds = list(times)
                for i in range(samples + 6):
                    p = rng.choice(patients)
                    kind = kinds[i % len(kinds)]
                    body = {"resourceType": "Parameters", "parameter": [
                        {"name": "resource", "resource": probe(p, kind)}]}  # fmt: skip
                    s = time.perf_counter()
                    r = await http.post("/Patient/$match", json=body)
                    elapsed = (time.perf_counter() - s) * 1000
                    assert r.status_code == 200, r.text
                    if i < 6:
                        continue  # warm-up
                    times[kind].append(elapsed)
                    ids = [e["resource"]["id"] for e in r.json().get("entry", [])]
                    found[kind] += bool(ids) and ids[0] == p["id"]
            raw: list[float] = []
            for p in rng.sample(patients, min(samples, len(patients))):
                s = time.perf_counter()
                await db.resources.find_one(
                    {"rt": "Patient", "ix.k": f"identifier={EDIPI}|{p['identifier'][0]['value']}"}
                )
                raw.append((time.perf_counter() - s) * 1000)
            every = [t for ts in times.values() for t in ts]
            print(f"$match on {size} Patients, {len(every)} calls (one at a time):")
            for kind, ts in times.items():
                print(
                    f"  {kind:15s} p50 {statistics.median(ts):7.1f} ms  p95 {pct(ts, 0.95):7.1f} ms"
                    f"  best match right {found[kind]}/{len(ts)}"
                )
            print(
                f"  {'all':15s} p50 {statistics.median(every):7.1f} ms  p95 {pct(every, 0.95):7.1f} ms"
            )
            print(f"  raw find_one by one identifier key: p50 {statistics.median(raw):.1f} ms")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            await client.drop_database(database)
            await client.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--size", type=int, default=10_000)
    ap.add_argument("--samples", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(args.size, args.samples, Path(tmp)))


if __name__ == "__main__":
    main()
