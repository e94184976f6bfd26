"""`fhir-server seed` into an empty database gives the documented population (issue 6)."""

from __future__ import annotations

import json
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from fhir_server.seeding import seed, seed_if_empty
from seed_data.population import build_population
from tests.conftest import make_settings, running_app

SEED_DIR = Path(__file__).resolve().parents[3] / "seed_data"


async def test_seed_contract_files_match_the_loaded_data(mongo_uri: str):
    async with running_app(make_settings(mongo_uri)) as client:
        ctx = client.app.state.ctx  # type: ignore[attr-defined]
        report = await seed_if_empty(ctx)
        assert report is not None
        expected = build_population(date.today())
        assert report.failed == []
        assert report.created == len(expected)
        stored = Counter()
        async for d in ctx.store.resources.find({}, projection={"rt": 1}):
            stored[d["rt"]] += 1
        assert stored == Counter(r["resourceType"] for r in expected)

        logins = json.loads((SEED_DIR / "logins.json").read_text())
        roles = {entry["role"] for entry in logins["logins"]}
        assert {
            "sponsor",
            "spouse",
            "adult-dependent-no-grant",
            "adult-dependent-granted",
            "basic-user",
            "managed-account",
            "cac-user",
            "piv-user",
            "practitioner",
        } <= roles
        for entry in logins["logins"]:
            for ref in [entry["fhirUser"], *entry["acts_for"]]:
                r = await client.get(ref)
                assert r.status_code == 200, f"{entry['role']}: {ref}"
        for key in ("child-under-12", "adolescent"):
            r = await client.get(f"Patient/{logins['fixtures'][key]}")
            assert r.status_code == 200
            born = date.fromisoformat(r.json()["birthDate"])
            age = (date.today() - born).days // 365.25
            assert (age < 12) if key == "child-under-12" else (12 <= age <= 17)

        clients = json.loads((SEED_DIR / "clients.json").read_text())
        assert {c["role"] for c in clients["clients"]} >= {
            "public-app",
            "confidential-app",
            "backend-service",
        }

        # Loading twice changes nothing: no new versions anywhere.
        versions = await ctx.store.history.count_documents({})
        again = await seed(ctx)
        assert (again.created, again.updated, again.failed) == (0, 0, [])
        assert again.unchanged == len(expected)
        assert await ctx.store.history.count_documents({}) == versions
        # A non-empty database is not seeded again at start-up.
        assert await seed_if_empty(ctx) is None


async def test_production_refuses_seed_data(mongo_uri: str):
    async with running_app(make_settings(mongo_uri)) as client:
        ctx = client.app.state.ctx  # type: ignore[attr-defined]
        ctx.settings = make_settings(mongo_uri, production=True)
        with pytest.raises(RuntimeError, match="production"):
            await seed(ctx)
