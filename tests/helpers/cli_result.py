"""The one rule every hostile CLI case is held to."""

from __future__ import annotations

from pathlib import Path

from click.testing import Result

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
