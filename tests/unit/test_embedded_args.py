"""The in-memory database's command line: a bounded oplog and a cache it does not fill."""

from __future__ import annotations

from pathlib import Path

from fhir_server.db.embedded import MEMORY_ARGS, EmbeddedDatabase


def test_in_memory_instance_bounds_its_oplog_and_raises_its_cache(tmp_path: Path) -> None:
    memory = EmbeddedDatabase(tmp_path, memory=True, port=1).command(":memory:")
    on_disk = EmbeddedDatabase(tmp_path, port=1).command(str(tmp_path / "db"))
    assert memory[-len(MEMORY_ARGS) :] == list(MEMORY_ARGS)
    assert "--oplog-max-entries" in memory and "--cache-size" in memory
    # A data directory keeps SecantusDB's defaults (production-like, durable).
    assert "--oplog-max-entries" not in on_disk and "--cache-size" not in on_disk
