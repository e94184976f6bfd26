"""Fetch the official FHIR R4 examples package into a local cache.

Runs ``npm pack hl7.fhir.r4.examples@4.0.1`` (HL7's own package, CC0) into
``.cache/r4-examples/`` (git-ignored) and unpacks it there; a later run reuses the cache.
The examples are test data only: the server never needs them to start.

Usage: ``python scripts/fetch_r4_examples.py`` prints the folder holding the JSON files.
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

PACKAGE = "hl7.fhir.r4.examples@4.0.1"
CACHE_DIR = Path(__file__).resolve().parents[1] / ".cache" / "r4-examples"
# Written last, so an interrupted fetch is redone instead of leaving half a package.
_DONE = CACHE_DIR / ".complete"


class FetchError(RuntimeError):
    """npm could not provide the package."""


def fetch(cache_dir: Path = CACHE_DIR) -> Path:
    """Return the unpacked ``package/`` folder, fetching it first if it is not cached.

    Parallel test workers call this at once: an exclusive lock beside the cache makes the
    second wait for the first instead of unpacking over it."""
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(cache_dir.parent / f".{cache_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _fetch(cache_dir)


def _fetch(cache_dir: Path) -> Path:
    package_dir = cache_dir / "package"
    done = cache_dir / _DONE.name
    if done.exists() and package_dir.is_dir():
        return package_dir
    npm = shutil.which("npm")
    if npm is None:
        raise FetchError("npm is not on PATH; it is needed to fetch " + PACKAGE)
    shutil.rmtree(cache_dir, ignore_errors=True)
    cache_dir.mkdir(parents=True)
    result = subprocess.run(
        [npm, "pack", PACKAGE, "--silent", "--pack-destination", str(cache_dir)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        raise FetchError(f"npm pack {PACKAGE} failed: {result.stderr.strip()}")
    tarballs = list(cache_dir.glob("*.tgz"))
    if len(tarballs) != 1:
        raise FetchError(f"npm pack {PACKAGE} left {len(tarballs)} tarballs in {cache_dir}")
    with tarfile.open(tarballs[0]) as tar:
        tar.extractall(cache_dir, filter="data")
    tarballs[0].unlink()
    done.touch()
    return package_dir


def main() -> int:
    try:
        print(fetch())
    except FetchError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
