"""The embedded development database: SecantusDB run as a child process.

SecantusDB is GPL-2.0, so it is never imported into the server's process: it runs as
its own program (`secantusd-py`) and the server speaks the MongoDB wire protocol to it,
exactly as it would to a real `mongod` (see docs/database.md).

A small state file under the data directory records the port and pid of a running
instance, so that `fhir-server load` / `seed` attach to the instance of a running
server instead of opening the same WiredTiger files a second time.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from pymongo import MongoClient
from pymongo.errors import PyMongoError

STATE_FILE = "secantus.json"
# An in-memory instance (the test session's) keeps everything in WiredTiger's cache, the
# oplog included (full documents, 100,000 entries by default). At the default 1 GB cache a
# test session's data filled it and the engine's eviction churned: from about 900 stored
# Synthea resources on, every write cost the database 3x the CPU (docs/testing.md). A
# bounded oplog (nothing here reads it: no change streams) and a larger cap keep it flat;
# the cap is a ceiling, not memory taken up front.
MEMORY_ARGS = ("--cache-size", "8G", "--oplog-max-entries", "10000")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _executable() -> str:
    beside = Path(sys.executable).parent / "secantusd-py"
    if beside.exists():
        return str(beside)
    found = shutil.which("secantusd-py")
    if not found:
        raise RuntimeError(
            "No MONGODB_URI is set and the embedded database is not installed: "
            "install the 'embedded' extra (pip install '.[embedded]')"
        )
    return found


def uri_for(port: int) -> str:
    return f"mongodb://127.0.0.1:{port}/?directConnection=true"


def _answers(port: int, timeout_ms: int = 500) -> bool:
    client: MongoClient[dict[str, object]] = MongoClient(
        uri_for(port), serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms
    )
    try:
        client.admin.command("ping")
        return True
    except PyMongoError:
        return False
    finally:
        client.close()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


class EmbeddedDatabase:
    """Start (or attach to) a SecantusDB child process whose files live in `data_dir`."""

    def __init__(self, data_dir: Path, *, memory: bool = False, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.memory = memory
        self.port: int | None = port
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        assert self.port is not None, "embedded database not started"
        return uri_for(self.port)

    @property
    def owned(self) -> bool:
        """True when this object started the process (and so must stop it)."""
        return self._proc is not None

    def _state_path(self) -> Path:
        return self.data_dir / STATE_FILE

    def _attach(self) -> bool:
        if self.memory:
            return False
        path = self._state_path()
        try:
            state = json.loads(path.read_text())
            port, pid = int(state["port"]), int(state["pid"])
        except (OSError, ValueError, KeyError):
            return False
        if _pid_alive(pid) and _answers(port):
            self.port = port
            return True
        return False

    def command(self, storage: str) -> list[str]:
        """The child's command line; an in-memory instance adds `MEMORY_ARGS`."""
        assert self.port is not None
        return [
            _executable(),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--storage-path",
            storage,
            "--log-level",
            "WARNING",
            *(MEMORY_ARGS if self.memory else ()),
        ]

    def start(self, *, timeout_s: float = 60.0) -> str:
        if self._attach():
            return self.uri
        self.data_dir.mkdir(parents=True, exist_ok=True)
        storage = ":memory:" if self.memory else str(self.data_dir / "db")
        self.port = self.port or free_port()
        log = open(self.data_dir / "secantus.log", "ab")  # noqa: SIM115 - owned by the child
        self._proc = subprocess.Popen(
            self.command(storage),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"embedded database exited with code {self._proc.returncode}; "
                    f"see {self.data_dir / 'secantus.log'}"
                )
            if _answers(self.port):
                if not self.memory:
                    self._state_path().write_text(
                        json.dumps({"port": self.port, "pid": self._proc.pid})
                    )
                return self.uri
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("embedded database did not start in time")

    def kill(self) -> None:
        """SIGKILL the child at once (the last resort of a stop that ran out of time)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()

    def stop(self, *, timeout_s: float = 20.0) -> None:
        """Stop the child cleanly (SIGTERM lets WiredTiger checkpoint), then force."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self._state_path().unlink()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
