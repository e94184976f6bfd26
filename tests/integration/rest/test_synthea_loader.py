"""Every one of the 16 Synthea bundles loads through `fhir-server load`'s path (the same
bundles through POST /fhir: test_synthea.py)."""

from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path

from fhir_server.loader import count_resources, files_under, load_paths
from tests.conftest import SYNTHEA_DIR, make_settings, running_app, synthea_bundles

BUNDLES = synthea_bundles()
EXPECTED = Counter(e["resource"]["resourceType"] for _, b in BUNDLES for e in b["entry"])


async def test_every_bundle_loads_through_the_loader(mongo_uri: str, tmp_path: Path):
    """The folder of `.json.gz` bundles as Synthea ships it (the README's example), plus
    one bundle uncompressed: the progress bar's total counts every resource of both."""
    gzipped = sorted(SYNTHEA_DIR.glob("*.json.gz"))
    plain = tmp_path / gzipped[0].name.removesuffix(".gz")
    plain.write_bytes(gzip.decompress(gzipped[0].read_bytes()))
    assert count_resources(gzipped[0]) == count_resources(plain) > 0
    assert sum(count_resources(p) for p in files_under([SYNTHEA_DIR])) == sum(EXPECTED.values())
    async with running_app(make_settings(mongo_uri)) as client:
        ctx = client.app.state.ctx  # type: ignore[attr-defined]
        summary = await load_paths(ctx, [SYNTHEA_DIR], progress=False)
        assert summary.failures == []
        assert summary.created == EXPECTED
        assert await ctx.store.history.count_documents({}) == sum(EXPECTED.values())
