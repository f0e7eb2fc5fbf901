"""One process at a time: the lock a training process holds on its run directory, and the
one ``maskclf review`` holds on the corrections file it writes.

``RUN/train.lock`` holds the host, PID, start time and command of the process training the
run; it is created atomically (``O_CREAT | O_EXCL``), so of two processes that start at once
exactly one trains. A second ``train --resume`` of a live run is refused naming the holder;
``predict`` of it says it is still training. A lock whose process is gone (on this host) is
taken over with a warning; one from another host is reported, since its process cannot be
checked from here. A file being written (``FILE.lock`` beside it, held by a live process) is
refused by readers that would train on a moment of it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from maskclf.errors import InputFileError, UsageError

LOCK = "train.lock"
log = logging.getLogger(__name__)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def read_holder(run: Path) -> dict | None:
    """Who holds ``run``'s lock (host, pid, started, command), or None."""
    return _read(run / LOCK)


def _read(path: Path) -> dict | None:
    try:
        holder = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return {"host": "?", "pid": -1, "started": "?", "command": "?"}  # a torn write
    return holder if isinstance(holder, dict) else {"host": "?", "pid": -1}


def live_holder(run: Path) -> dict | None:
    """The lock's holder while it may still be training: a live process on this host, or
    any process on another host (it cannot be checked from here)."""
    return _live(run / LOCK)


def _live(path: Path) -> dict | None:
    holder = _read(path)
    if holder is None:
        return None
    if holder.get("host") == socket.gethostname() and not _alive(int(holder.get("pid", -1))):
        return None
    return holder


def describe(holder: dict) -> str:
    return (f"process {holder.get('pid')} on {holder.get('host')} since "
            f"{holder.get('started')} ({holder.get('command')})")


def require_idle(run: Path) -> None:
    """A :class:`UsageError` naming the process when one is training ``run`` now."""
    holder = live_holder(run)
    if holder is not None:
        raise UsageError(f"{run} is being trained by {describe(holder)}; wait for it to "
                         f"finish (if that process is gone for good, remove {run / LOCK})")


def _mine(holder: dict) -> bool:
    return holder.get("host") == socket.gethostname() and holder.get("pid") == os.getpid()


def writer_lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def refuse_if_written(path: Path, what: str) -> None:
    """An :class:`InputFileError` naming the writer when a live process holds ``path``'s
    writer lock (a review session still deciding what the file says)."""
    holder = _live(writer_lock_path(path))
    if holder is not None and not _mine(holder):
        raise InputFileError(f"{what} {path} is being written by {describe(holder)}; stop "
                             f"it first (if that process is gone for good, remove "
                             f"{writer_lock_path(path)})")


@contextmanager
def writer_lock(path: Path, command: str, what: str) -> Iterator[None]:
    """Hold ``path``'s writer lock while the block writes it; refused (naming the holder)
    when a live process holds it."""
    with _holding(writer_lock_path(path), command, lambda: refuse_if_written(path, what)):
        yield


@contextmanager
def training_lock(run: Path, command: str) -> Iterator[None]:
    """Hold ``run``'s lock while the block trains; refused when a live process holds it."""
    with _holding(run / LOCK, command, lambda: require_idle(run)):
        yield


@contextmanager
def _holding(path: Path, command: str, refuse_if_busy) -> Iterator[None]:
    """Hold the lock file ``path``: created atomically, taken over from a process that is
    gone, ``refuse_if_busy()`` raises when a live one holds it."""
    record = {"host": socket.gethostname(), "pid": os.getpid(), "command": command,
              "started": datetime.now().isoformat(timespec="seconds")}
    for _ in range(2):
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            refuse_if_busy()
            log.warning("taking over %s, left by %s, which is no longer running", path,
                        describe(_read(path) or {}))
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(descriptor, "w") as handle:
            json.dump(record, handle)
        break
    else:
        raise UsageError(f"could not take {path}: another process took it first")
    try:
        yield
    finally:
        if _mine(_read(path) or {}):
            path.unlink(missing_ok=True)
