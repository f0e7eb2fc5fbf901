"""The one rule every hostile CLI case is held to."""

from __future__ import annotations

from pathlib import Path

from click.testing import Result
from typer.testing import CliRunner

from tests.conftest import TINY_OVERRIDES

TINY = [arg for override in TINY_OVERRIDES for arg in ("-o", override)]
"""The tiny test network's settings as ``-o`` flags."""
PWNED = Path("/tmp/maskclf-hostile-pwned")
"""What a YAML or pickle payload in a hostile case would create if it ever ran."""


def assert_clear_error_or_works(result: Result, expected: int, fragment: str) -> None:
    """Exit ``expected``; no traceback, no exception; with exit 2, exactly one ``error:``
    line naming ``fragment``; no payload ever ran."""
    message = result.output
    assert result.exit_code == expected, f"exit {result.exit_code}: {message}"
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit), f"raised {result.exception!r}: {message}"
    assert "Traceback" not in message
    if expected == 2:
        assert message.count("error:") == 1, message
        assert fragment in message, f"{fragment!r} not named in: {message}"
    assert not PWNED.exists()


def tiny_dataset_and_run(root: Path, *train_flags: str) -> tuple[Path, Path]:
    """``root/data`` (12 synthetic persons, 2 eval) and ``root/runs/r``, a one-epoch tiny
    run on it (``train_flags`` added): the read-only templates hostile cases copy."""
    from maskclf.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["make-synthetic", str(root / "data"), "--persons", "12",
                                 "--eval-persons", "2"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["train", "--data", str(root / "data"), "--out",
                                 str(root / "runs"), "--name", "r", *TINY, *train_flags])
    assert result.exit_code == 0, result.output
    return root / "data", root / "runs" / "r"
