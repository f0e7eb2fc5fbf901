"""The ``maskclf`` command line: each command parses, calls one library function, shows.

One module per group of commands (``data``, ``train``, ``predict``, ``runs``); the rules
every command follows (errors, exit codes, ``--json``, log lines) live in ``base``.
"""

from __future__ import annotations

import importlib
import signal
import sys

from maskclf.cli.base import app, group_by_job

for _group in ("train", "predict", "runs", "data"):  # each registers its commands
    importlib.import_module(f"maskclf.cli.{_group}")
group_by_job(app)

__all__ = ["app", "main"]


def main() -> None:
    """The ``maskclf`` program. A Ctrl+C that lands after a command's own handling, while it
    prints, ends with 130; once the command has finished, the interpreter's shutdown ignores
    it (the work is done and written), instead of dying by the signal."""
    try:
        app(prog_name="maskclf")
    except KeyboardInterrupt:
        sys.exit(128 + signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
