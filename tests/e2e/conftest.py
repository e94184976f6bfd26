"""Real `fhir-server serve` processes on free ports."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from fhir_server.db.embedded import free_port

SCRIPT = str(Path(sys.executable).parent / "fhir-server")


class LiveServer:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/fhir"
        self.env = {**os.environ, **env, "PORT": str(self.port), "HOST": "127.0.0.1"}
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 90) -> LiveServer:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [SCRIPT, "serve"], env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(f"{self.base}/metadata", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"server did not start: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    servers: list[LiveServer] = []

    def start(**env: str) -> LiveServer:
        env.setdefault("DATA_DIR", str(tmp_path / "data"))
        # These tests exercise the REST core; the SMART tests cover tokens end to end.
        env.setdefault("AUTH_REQUIRED", "0")
        server = LiveServer(env, tmp_path / f"server-{len(servers)}.log").start()
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.stop()


def shared_db_env(mongo_uri: str) -> dict[str, str]:
    return {
        "MONGODB_URI": mongo_uri,
        "MONGODB_DATABASE": f"e2e_{uuid.uuid4().hex[:10]}",
        "AUTO_SEED": "0",
        "AUTH_REQUIRED": "0",
    }
