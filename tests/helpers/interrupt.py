"""Drive maskclf in subprocesses and interrupt it: SIGKILL during writes, SIGINT during runs.

Shared by ``tests/test_kill.py`` (a few moments) and ``benchmarks/bench_kill.py`` (many).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import TINY_OVERRIDES
from tests.helpers import kill_writer

ROOT = Path(__file__).resolve().parents[2]


def _unignored_sigint() -> None:
    """Children of a non-interactive shell inherit an ignored SIGINT; restore the default."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def kill_while_writing(mode: str, folder: Path, delay: float) -> int:
    """Start the writer loop, SIGKILL it ``delay`` s after its first complete write, and
    return how many whole files the check found."""
    writer = subprocess.Popen([sys.executable, "-m", "tests.helpers.kill_writer", mode,
                               str(folder)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "ready"
        time.sleep(delay)
    finally:
        writer.kill()
        writer.wait(30)
    return kill_writer.check(mode, folder)


def train_args(data: Path, out: Path, name: str) -> list[str]:
    """A tiny 2-fold, 3-epoch run with dropout and augmentation (both must replay)."""
    overrides = [*TINY_OVERRIDES, "train.epochs=3", "data.folds=2", "model.drop_rate=0.2",
                 "aug.color_jitter=1.0"]
    return ["train", "--data", str(data), "--out", str(out), "--name", name,
            *[arg for o in overrides for arg in ("-o", o)], "--json"]


def maskclf(*args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "maskclf", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_unignored_sigint, **popen)


def interrupt_and_resume(data: Path, out: Path, name: str, delay: float,
                         signum: int = signal.SIGINT) -> tuple[int, dict, str]:
    """Train, send ``signum`` ``delay`` s after the run directory appears, resume until
    done; returns the interrupted command's exit status, the finished summary and the end of
    the interrupted command's stderr."""
    run = out / name
    first = maskclf(*train_args(data, out, name))
    while not (run / "config.yaml").exists() and first.poll() is None:
        time.sleep(0.05)
    time.sleep(delay)
    first.send_signal(signum)
    _, first_err = first.communicate(timeout=300)
    if not (run / "summary.json").exists():
        resumed = maskclf("train", "--resume", str(run))
        _, err = resumed.communicate(timeout=300)
        assert resumed.returncode == 0, err
    return first.returncode, json.loads((run / "summary.json").read_text()), first_err[-2000:]
