"""One process per run: the lock a training process holds on its run directory.

``RUN/train.lock`` holds the host, PID, start time and command of the process training the
run; it is created atomically (``O_CREAT | O_EXCL``), so of two processes that start at once
exactly one trains. A second ``train --resume`` of a live run is refused naming the holder;
``predict`` of it says it is still training. A lock whose process is gone (on this host) is
taken over with a warning; one from another host is reported, since its process cannot be
checked from here.
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

from maskclf.errors import UsageError

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
    try:
        holder = json.loads((run / LOCK).read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return {"host": "?", "pid": -1, "started": "?", "command": "?"}  # a torn write
    return holder if isinstance(holder, dict) else {"host": "?", "pid": -1}


def live_holder(run: Path) -> dict | None:
    """The lock's holder while it may still be training: a live process on this host, or
    any process on another host (it cannot be checked from here)."""
    holder = read_holder(run)
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


@contextmanager
def training_lock(run: Path, command: str) -> Iterator[None]:
    """Hold ``run``'s lock while the block trains; refused when a live process holds it."""
    path = run / LOCK
    record = {"host": socket.gethostname(), "pid": os.getpid(), "command": command,
              "started": datetime.now().isoformat(timespec="seconds")}
    for _ in range(2):
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            require_idle(run)
            log.warning("taking over %s, left by %s, which is no longer running", path,
                        describe(read_holder(run) or {}))
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
        if (read_holder(run) or {}).get("pid") == os.getpid():
            path.unlink(missing_ok=True)
