"""Every one of the 16 Synthea bundles loads through POST /fhir (the loader: test_synthea_loader.py)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from fhir_server.loader import count_resources, load_paths
from tests.conftest import FHIR_JSON, make_settings, running_app, synthea_bundles

BUNDLES = synthea_bundles()
EXPECTED = Counter(e["resource"]["resourceType"] for _, b in BUNDLES for e in b["entry"])


def test_the_data_is_all_there():
    assert len(BUNDLES) == 16
    assert sum(EXPECTED.values()) == 3507


async def test_every_bundle_loads_through_post(mongo_uri: str):
    """Each of the 16 bundles POSTed to /fhir as a transaction: every entry 201, every
    resource stored with one history version, every reference resolved. The same bundles
    through `fhir-server load`'s path: test_synthea_loader.py (a file of its own, so the two
    run on different test workers)."""
    async with running_app(make_settings(mongo_uri)) as client:
        for name, bundle in BUNDLES:
            r = await client.post("", json=bundle, headers=FHIR_JSON, timeout=120)
            assert r.status_code == 200, f"{name}: {r.text[:500]}"
            statuses = Counter(e["response"]["status"] for e in r.json()["entry"])
            assert statuses == Counter({"201 Created": len(bundle["entry"])}), name
        ctx = client.app.state.ctx  # type: ignore[attr-defined]
        stored = Counter()
        async for doc in ctx.store.resources.find({}, projection={"rt": 1}):
            stored[doc["rt"]] += 1
        assert stored == EXPECTED
        assert await ctx.store.history.count_documents({}) == sum(EXPECTED.values())
        # Every urn:uuid reference was rewritten to a stored Type/id.
        patient_ids = {d["id"] async for d in ctx.store.resources.find({"rt": "Patient"})}
        dangling = 0
        async for doc in ctx.store.resources.find({"rt": "Observation"}, projection={"res": 1}):
            ref = doc["res"]["subject"]["reference"]
            assert not ref.startswith("urn:")
            dangling += ref.split("/")[1] not in patient_ids
        assert dangling == 0


async def test_loader_reports_failures_and_ndjson(mongo_uri: str, tmp_path: Path):
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "rows.ndjson").write_text(
        '{"resourceType": "Patient", "id": "nd-1"}\n'
        '{"resourceType": "Patient", "gender": "banana"}\n'
        '{"resourceType": "Observation", "status": "final", "code": {"text": "x"}}\n'
    )
    async with running_app(make_settings(mongo_uri)) as client:
        ctx = client.app.state.ctx  # type: ignore[attr-defined]
        summary = await load_paths(ctx, [tmp_path], progress=False)
        assert summary.created == Counter({"Patient": 1, "Observation": 1})
        # The progress bar's total counts resources, not files.
        assert [count_resources(tmp_path / f) for f in ("broken.json", "rows.ndjson")] == [0, 3]
        assert len(summary.failures) == 2
        assert any("broken.json" in f for f in summary.failures)
        assert any("rows.ndjson" in f and "400" in f for f in summary.failures)
        r = await client.get("Patient/nd-1")
        assert r.status_code == 200
