"""`fhir-server load`: transaction/batch bundles and NDJSON files into the store.

Bundles go through the same transaction/batch processing as `POST /fhir` (a transaction:
validated whole, then written in one database transaction with a few bulk writes, all or
nothing; docs/rest.md, "Bundles"); NDJSON lines are grouped into batches (PUT when the
resource has an id, POST otherwise). The progress bar counts resources; the caller gets a
summary of what was created and what failed and why.
"""

from __future__ import annotations

import asyncio
import gzip
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import orjson

from fhir_server.context import ServerContext
from fhir_server.errors import FhirError
from fhir_server.rest import bundle as bundles
from fhir_server.rest.body import check_tree
from fhir_server.rest.dispatch import dispatch
from fhir_server.rest.messages import FhirRequest

NDJSON_BATCH = 500


@dataclass
class LoadSummary:
    created: Counter[str] = field(default_factory=Counter)
    updated: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [
            f"created {sum(self.created.values())} resources"
            + (
                f" ({', '.join(f'{k} {v}' for k, v in self.created.most_common())})"
                if self.created
                else ""
            )
        ]
        if self.updated:
            out.append(f"updated {sum(self.updated.values())} resources")
        out.append(f"failed {len(self.failures)}")
        out += [f"  - {f}" for f in self.failures[:50]]
        if len(self.failures) > 50:
            out.append(f"  ... and {len(self.failures) - 50} more")
        return out


# Synthea and Bulk Data files often come gzipped: `x.json.gz` and `x.ndjson.gz` load as
# `x.json` and `x.ndjson` do.
KINDS = (".json", ".ndjson")


def kind(path: Path) -> str:
    """ ".json" or ".ndjson" (after a ".gz"), else the suffix as it is."""
    name = path.name.removesuffix(".gz")
    return next((k for k in KINDS if name.endswith(k)), path.suffix)


def _open(path: Path) -> IO[bytes]:
    if path.name.endswith(".gz"):
        return cast(IO[bytes], gzip.open(path, "rb"))
    return path.open("rb")


def _read(path: Path) -> bytes:
    with _open(path) as fh:
        return fh.read()


def files_under(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and kind(f) in KINDS)
        else:
            out.append(p)
    return out


def _ndjson_batches(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    entries: list[dict[str, Any]] = []
    first = 1
    with _open(path) as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            resource = orjson.loads(line)
            rt = resource.get("resourceType", "")
            if resource.get("id"):
                request = {"method": "PUT", "url": f"{rt}/{resource['id']}"}
            else:
                request = {"method": "POST", "url": rt}
            entries.append({"resource": resource, "request": request})
            if len(entries) == NDJSON_BATCH:
                yield first, {"resourceType": "Bundle", "type": "batch", "entry": entries}
                entries, first = [], n + 1
    if entries:
        yield first, {"resourceType": "Bundle", "type": "batch", "entry": entries}


def _units(path: Path) -> Iterator[tuple[str, Any]]:
    """(label, bundle) pairs for one file; a bad file yields its error as the bundle."""
    try:
        if kind(path) == ".ndjson":
            for first, bundle in _ndjson_batches(path):
                yield f"{path.name} from line {first}", bundle
            return
        body = orjson.loads(_read(path))
    except (OSError, EOFError, orjson.JSONDecodeError) as exc:
        yield path.name, exc
        return
    if isinstance(body, dict) and body.get("resourceType") != "Bundle":
        rt = body.get("resourceType", "")
        request = (
            {"method": "PUT", "url": f"{rt}/{body['id']}"}
            if body.get("id")
            else {"method": "POST", "url": rt}
        )
        body = {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [{"resource": body, "request": request}],
        }
    yield path.name, body


def _record(summary: LoadSummary, label: str, body: dict[str, Any]) -> int:
    """Add a batch- or transaction-response to the summary; the number of entries."""
    for i, entry in enumerate(body.get("entry", [])):
        r = entry["response"]
        status = int(r["status"].split()[0])
        rt = (r.get("location") or "?").split("/")[0]
        if status == 201:
            summary.created[rt] += 1
        elif status < 300:
            summary.updated[rt] += 1
        else:
            issues = (r.get("outcome") or {}).get("issue") or [{}]
            summary.failures.append(
                f"{label} entry {i}: {r['status']} {issues[0].get('diagnostics', '')}"
            )
    return len(body.get("entry", []))


def _failed(summary: LoadSummary, label: str, bundle: Any, exc: FhirError) -> int:
    summary.failures.append(f"{label}: {exc.status} {exc.diagnostics}")
    return len(bundle.get("entry") or []) if isinstance(bundle, dict) else 0


async def load_bundle(ctx: ServerContext, label: str, bundle: Any, summary: LoadSummary) -> int:
    """Load one bundle; returns the number of entries handled."""
    if isinstance(bundle, Exception):
        summary.failures.append(f"{label}: not readable JSON ({bundle})")
        return 0
    try:
        check_tree(bundle, max_depth=ctx.settings.max_json_depth)
        resp = await dispatch(ctx, FhirRequest(method="POST", path=[], body=bundle))
    except FhirError as exc:
        return _failed(summary, label, bundle, exc)
    assert resp.body is not None
    return _record(summary, label, resp.body)


class Pipeline:
    """Loads bundles one database transaction at a time, preparing the next transaction
    bundle (parsing, reference resolution, validation: server CPU, no database) while the
    previous one's transaction runs (database work), so the two overlap. Transactions
    still run strictly one after another, each all or nothing, in the files' order; a
    bundle whose preparation reads the database (`ifNoneExist`, conditional references)
    waits for the transaction before it. `done(n)` is called with each bundle's count."""

    def __init__(
        self, ctx: ServerContext, summary: LoadSummary, done: Callable[[int], object]
    ) -> None:
        self.ctx = ctx
        self.summary = summary
        self.done = done
        self._writing: asyncio.Task[None] | None = None

    async def add(self, label: str, bundle: Any) -> None:
        prepared = None
        try:
            if not isinstance(bundle, Exception):
                check_tree(bundle, max_depth=self.ctx.settings.max_json_depth)
                req = FhirRequest(method="POST", path=[], body=bundle)
                kind, entries = bundles.bundle_entries(req)
                if kind == "transaction" and not bundles.looks_up_before_writing(entries):
                    prepared = await bundles.prepare_transaction(
                        self.ctx, entries, req.policy, want_resource=False
                    )
        except FhirError as exc:
            await self.drain()
            self.done(_failed(self.summary, label, bundle, exc))
            return
        except BaseException:
            await self.drain()
            raise
        await self.drain()
        if prepared is None:
            self.done(await load_bundle(self.ctx, label, bundle, self.summary))
            return
        self._writing = asyncio.create_task(self._write(label, prepared, bundle))
        # Let it run its entries (CPU) up to its bulk writes, then prepare the next bundle
        # while the database works.
        await asyncio.sleep(0)

    async def _write(self, label: str, prepared: bundles.PreparedTransaction, bundle: Any) -> None:
        try:
            out = await bundles.write_transaction(self.ctx, prepared, dispatch)
        except FhirError as exc:
            self.done(_failed(self.summary, label, bundle, exc))
            return
        self.done(_record(self.summary, label, {"entry": out}))

    async def drain(self) -> None:
        """Wait for the transaction under way, if any."""
        writing, self._writing = self._writing, None
        if writing is not None:
            await writing


def count_resources(path: Path) -> int:
    """How many resources a file holds (entries of a bundle, lines of NDJSON), for the
    progress bar's total; an unreadable file counts 0 (its failure is reported later)."""
    try:
        if kind(path) == ".ndjson":
            with _open(path) as fh:
                return sum(1 for line in fh if line.strip())
        body = orjson.loads(_read(path))
    except (OSError, EOFError, orjson.JSONDecodeError):
        return 0
    if isinstance(body, dict) and body.get("resourceType") == "Bundle":
        entries = body.get("entry")
        return len(entries) if isinstance(entries, list) else 0
    return 1


async def load_paths(
    ctx: ServerContext, paths: list[Path], *, progress: bool = True
) -> LoadSummary:
    from tqdm import tqdm

    summary = LoadSummary()
    files = files_under(paths)
    # Counting first reads each file twice; parsing costs little beside storing.
    total = sum(count_resources(p) for p in files) if progress else None
    with tqdm(total=total, unit="resource", disable=not progress) as bar:
        pipeline = Pipeline(ctx, summary, bar.update)
        for path in files:
            for label, bundle in _units(path):
                await pipeline.add(label, bundle)
        await pipeline.drain()
    return summary
