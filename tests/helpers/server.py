"""``maskclf serve`` in a subprocess on a free loopback port, started and awaited one way for
the browser test, the hostile-client tests and ``benchmarks/bench_serve.py``: it answers
``/health`` before the block runs, or the block never runs (an error with the server's log)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def chromium() -> str:
    """Chromium's executable for Playwright (nothing downloaded); the test is skipped where
    there is none, and fails under CI (``MASKCLF_REQUIRE_BROWSER``)."""
    import pytest

    executable = next(filter(None, (shutil.which(n) for n in ("chromium", "chromium-browser"))),
                      None)
    if executable is None:
        if os.environ.get("MASKCLF_REQUIRE_BROWSER"):
            pytest.fail("no Chromium found, and MASKCLF_REQUIRE_BROWSER is set (CI)")
        pytest.skip("no Chromium on this machine (apt-get install -y chromium)")
    return executable


@dataclass(frozen=True)
class Served:
    port: int
    process: subprocess.Popen
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def served(export: Path, *options: str, log: Path | None = None, start_s: float = 60.0,
           command: str = "serve", ready: str = "/health") -> Iterator[Served]:
    """``maskclf serve EXPORT --port P OPTIONS`` (or another serving ``command``, awaited
    until it answers ``ready``); its stderr in ``log`` (a temporary file by default).
    Stopped (SIGTERM, then SIGKILL) when the block ends, however it ends."""
    port = free_port()
    with tempfile.TemporaryDirectory() as scratch:
        log = log or Path(scratch) / "server.log"
        with log.open("w") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "maskclf", command, str(export), "--port", str(port),
                 *options], cwd=ROOT, stderr=stderr, stdout=subprocess.DEVNULL)
        try:
            _await_health(port, process, log, start_s, ready)
            yield Served(port, process, log)
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _await_health(port: int, process: subprocess.Popen, log: Path, start_s: float,
                  ready: str) -> None:
    deadline = time.monotonic() + start_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited ({process.returncode}) before answering: "
                               f"{log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{ready}", timeout=1)
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the server did not answer {ready} within {start_s:.0f}s: "
                       f"{log.read_text()[-2000:]}")
