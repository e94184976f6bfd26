"""`fhir-server export` and `fhir-server import`: drive `$export` / `$import` over HTTP,
with a progress bar counting resources (the status URL's `X-Progress` says how many so far).

Both talk to a running server (`--base`, default the local one) with a bearer token
(`--token` or the FHIR_TOKEN environment variable), as any client would.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from fhir_server.config import Settings

_COUNT = re.compile(r"(\d+) resources")


def add_parsers(sub: Any) -> None:
    for name, text in (
        ("export", "run a Bulk Data $export"),
        ("import", "run a Bulk Data $import"),
    ):
        p = sub.add_parser(name, help=f"{text} against a running server, with a progress bar")
        p.add_argument("--base", default=None, help="FHIR base URL (default: this server's)")
        p.add_argument("--token", default=None, help="bearer token (default: $FHIR_TOKEN)")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        if name == "export":
            p.add_argument("--type", default=None, help="_type: comma-separated types")
            p.add_argument("--out", default="export", help="folder for the ndjson files")
        else:
            p.add_argument("inputs", nargs="+", help="Type=URL of each NDJSON file")
            p.add_argument("--source", default=None, help="inputSource (the partner's base)")


def _client(settings: Settings, args: argparse.Namespace) -> Any:
    import httpx

    token = args.token or os.environ.get("FHIR_TOKEN")
    headers = {"Accept": "application/fhir+json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.Client(
        base_url=(args.base or settings.base_url).rstrip("/"), headers=headers, timeout=60
    )


def _poll(http: Any, location: str, quiet: bool) -> Any:
    from tqdm import tqdm

    with tqdm(unit="resource", disable=quiet) as bar:
        while True:
            r = http.get(location)
            if r.status_code != 202:
                return r
            m = _COUNT.search(r.headers.get("x-progress", ""))
            if m and int(m.group(1)) > bar.n:
                bar.update(int(m.group(1)) - bar.n)
            time.sleep(min(float(r.headers.get("retry-after", "1")), 2.0))


def _failed(r: Any) -> int:
    print(f"HTTP {r.status_code}: {r.text[:2000]}", file=sys.stderr)
    return 1


def export(settings: Settings, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    with _client(settings, args) as http:
        params = {"_type": args.type} if args.type else {}
        r = http.get("/$export", params=params, headers={"Prefer": "respond-async"})
        if r.status_code != 202:
            return _failed(r)
        r = _poll(http, r.headers["content-location"], args.quiet)
        if r.status_code != 200:
            return _failed(r)
        manifest = r.json()
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        total = sum(int(o.get("count", 0)) for o in manifest["output"])
        with tqdm(total=total, unit="resource", disable=args.quiet) as bar:
            for n, item in enumerate(manifest["output"] + manifest.get("error", []), start=1):
                path = out / f"{n:03d}.{item['type']}.ndjson"
                with http.stream(
                    "GET", item["url"], headers={"Accept": "application/fhir+ndjson"}
                ) as f:
                    if f.status_code != 200:
                        return _failed(f)
                    with path.open("wb") as fh:
                        for chunk in f.iter_bytes():
                            fh.write(chunk)
                            if item["type"] != "OperationOutcome":
                                bar.update(chunk.count(b"\n"))
        print(f"exported {total} resources into {out}/")
    return 0


def import_(settings: Settings, args: argparse.Namespace) -> int:
    inputs = []
    for text in args.inputs:
        rt, _, url = text.partition("=")
        if not rt or not url:
            print(f"import: {text!r} is not Type=URL", file=sys.stderr)
            return 2
        inputs.append(
            {
                "name": "input",
                "part": [{"name": "type", "valueCode": rt}, {"name": "url", "valueUri": url}],
            }
        )
    body: dict[str, Any] = {
        "resourceType": "Parameters",
        "parameter": [{"name": "inputFormat", "valueCode": "application/fhir+ndjson"}, *inputs],
    }
    if args.source:
        body["parameter"].append({"name": "inputSource", "valueUri": args.source})
    with _client(settings, args) as http:
        r = http.post(
            "/$import",
            json=body,
            headers={"Prefer": "respond-async", "Content-Type": "application/fhir+json"},
        )
        if r.status_code != 202:
            return _failed(r)
        r = _poll(http, r.headers["content-location"], args.quiet)
        if r.status_code != 200:
            return _failed(r)
        manifest = r.json()
    for o in manifest["output"]:
        print(
            f"{o['type']} {o['inputUrl']}: {o['created']} created, {o['updated']} updated, "
            f"{o['unchanged']} unchanged"
        )
    failed = sum(e["count"] for e in manifest["error"])
    for e in manifest["error"]:
        print(f"{e['count']} refused in {e['inputUrl']}: {e['url']}")
    return 1 if failed else 0
