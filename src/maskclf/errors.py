"""maskclf's own error types: problems a user can fix, reported without a traceback.

The CLI turns a :class:`MaskclfError` into one red line and exit status 2; any other
exception is a bug and keeps its traceback. Each subclass also derives from the built-in
error it refines, so ``except ValueError`` in user code keeps working.
"""

from __future__ import annotations


class MaskclfError(Exception):
    """A problem in the user's input, files or settings; the message says how to fix it."""


class UsageError(MaskclfError, ValueError):
    """Arguments that do not fit together or do not fit the run (e.g. a fold that does not
    exist, weights that do not match the inputs)."""


class InputFileError(MaskclfError, ValueError):
    """A file that exists but cannot be used as given (wrong columns, different ids...)."""


class MissingFileError(MaskclfError, FileNotFoundError):
    """A file or folder maskclf needs is not there."""


class RunInterrupted(MaskclfError):
    """Training stopped on a signal; the run directory is left resumable.

    The CLI exits with 128 + the signal number (130 for SIGINT, 143 for SIGTERM).
    """

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


class RankLost(MaskclfError):
    """A rank of a multi-process run stopped answering; the run directory is resumable."""
