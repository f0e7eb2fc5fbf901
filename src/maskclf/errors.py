"""maskclf's own error types: problems a user can fix, reported without a traceback.

The CLI turns a :class:`MaskclfError` into one red line and exit status 2; any other
exception is a bug and keeps its traceback. Each subclass also derives from the built-in
error it refines, so ``except ValueError`` in user code keeps working.
"""

from __future__ import annotations


class MaskclfError(Exception):
    """A problem in the user's input, files or settings; the message says how to fix it."""


class ConfigError(MaskclfError, ValueError):
    """A config file or override that cannot be used; the message says which key and why."""


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


class DataError(MaskclfError, ValueError):
    """A dataset that cannot be used; ``problems`` lists (file, what is wrong)."""

    def __init__(self, problems: list[tuple[str, str]], max_listed: int = 50):
        self.problems = problems
        listed = [f"  {file}: {what}" for file, what in problems[:max_listed]]
        if len(problems) > max_listed:
            listed.append(f"  ... and {len(problems) - max_listed} more")
        super().__init__(
            f"dataset has {len(problems)} problem(s); fix them and run again:\n"
            + "\n".join(listed)
        )


class TableError(InputFileError):
    """A CSV file that cannot be used; ``path`` and ``problem`` for callers that list many."""

    def __init__(self, what: str, path, problem: str):
        super().__init__(f"{what} {path} {problem}")
        self.path, self.problem = path, problem


class SubmissionError(MaskclfError, ValueError):
    """A submission that would be scored wrongly; the message says which rows and why."""


class ModelWeightsError(MaskclfError, RuntimeError):
    """Pretrained weights were asked for but cannot be loaded; the message says how to fix it."""


class CacheDiskFull(MaskclfError, OSError):
    """The disk cannot hold the decode cache; the message says which folder and how much."""


class ImageTooLarge(ValueError):
    """An image whose header claims more pixels than ``io.MAX_PIXELS`` (a decompression
    bomb?). Not a :class:`MaskclfError`: callers name the file (a dataset problem, an HTTP
    413)."""


def first_line(exc: BaseException, limit: int = 160) -> str:
    """What a library's exception says, for a one-line message: its type and first line
    (only the type when it says nothing, as ``IndexError()`` does)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:limit]}" if lines else type(exc).__name__
