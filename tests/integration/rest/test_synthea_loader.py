"""Every one of the 16 Synthea bundles loads through `fhir-server load`'s path (the same
bundles through POST /fhir: test_synthea.py)."""

from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path

from fhir_server.loader import load_paths
from tests.conftest import SYNTHEA_DIR, make_settings, running_app, synthea_bundles

BUNDLES = synthea_bundles()
EXPECTED = Counter(e["resource"]["resourceType"] for _, b in BUNDLES for e in b["entry"])


async def test_every_bundle_loads_through_the_loader(mongo_uri: str, tmp_path: Path):
    for p in SYNTHEA_DIR.glob("*.json.gz"):
        (tmp_path / p.name.removesuffix(".gz")).write_bytes(gzip.decompress(p.read_bytes()))
    async with running_app(make_settings(mongo_uri)) as client:
        ctx = client.app.state.ctx  # type: ignore[attr-defined]
        summary = await load_paths(ctx, [tmp_path], progress=False)
        assert summary.failures == []
        assert summary.created == EXPECTED
        assert await ctx.store.history.count_documents({}) == sum(EXPECTED.values())
