"""profiles/exchange/imports.json as a frozen dataclass, parsed fail-fast at start-up."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from fhir_server.netguard import Network, parse_networks

PATH = Path(__file__).resolve().parents[3] / "profiles" / "exchange" / "imports.json"
Doc = dict[str, Any]


@dataclass(frozen=True)
class ImportTable:
    input_formats: tuple[str, ...]
    storage_types: tuple[str, ...]
    https_only_in_production: bool
    denied_networks: tuple[Network, ...]
    allowed_in_development: tuple[Network, ...]
    batch_lines: int
    max_line_bytes: int
    max_file_bytes: int
    fetch_timeout_s: float
    max_inputs: int
    active_jobs_per_client: int
    keep_hours: int
    provenance: Doc

    def allowed_networks(self, production: bool) -> tuple[Network, ...]:
        return () if production else self.allowed_in_development


def _int(raw: Doc, key: str, low: int, high: int) -> int:
    v = raw.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high:
        raise ValueError(f"imports.json: {key} must be an integer in [{low}, {high}]")
    return v


def _codes(raw: Doc, key: str) -> tuple[str, ...]:
    v = raw.get(key)
    if not isinstance(v, list) or not v or not all(isinstance(x, str) and x for x in v):
        raise ValueError(f"imports.json: {key} must be a non-empty list of strings")
    return tuple(v)


def parse(raw: Doc) -> ImportTable:
    prov = raw.get("provenance")
    need = ("activity", "update_activity", "organization_agent", "client_agent")
    if not isinstance(prov, dict) or not all(
        isinstance(prov.get(k), dict) and prov[k].get("code") for k in need
    ):
        raise ValueError(f"imports.json: provenance needs codings {list(need)}")
    for k in ("client_system", "source_system"):
        if not isinstance(prov.get(k), str):
            raise ValueError(f"imports.json: provenance.{k} must be a URI")
    return ImportTable(
        input_formats=_codes(raw, "input_formats"),
        storage_types=_codes(raw, "storage_types"),
        https_only_in_production=bool(raw.get("https_only_in_production", True)),
        denied_networks=parse_networks(raw.get("denied_networks"), "imports.json: denied_networks"),
        allowed_in_development=parse_networks(
            raw.get("allowed_networks_in_development", []),
            "imports.json: allowed_networks_in_development",
        ),
        batch_lines=_int(raw, "batch_lines", 1, 10_000),
        max_line_bytes=_int(raw, "max_line_bytes", 1024, 64 << 20),
        max_file_bytes=_int(raw, "max_file_bytes", 1024, 1 << 40),
        fetch_timeout_s=float(_int(raw, "fetch_timeout_s", 1, 3600)),
        max_inputs=_int(raw, "max_inputs", 1, 10_000),
        active_jobs_per_client=_int(raw, "active_jobs_per_client", 1, 1000),
        keep_hours=_int(raw, "keep_hours", 1, 24 * 365),
        provenance=prov,
    )


@functools.cache
def load_table(path: Path = PATH) -> ImportTable:
    return parse(orjson.loads(path.read_bytes()))
