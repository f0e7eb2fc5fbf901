"""Tables stay readable at any width: columns as wide as their longest word, one block per
row when they do not fit, counts that agree with their nouns."""

import io

import pandas as pd
from rich.console import Console

from maskclf.cli.render import frame_table, plural

FRAME = pd.DataFrame({"name": ["baseline", "per_attribute"],
                      "model": ["efficientnet_b0", "efficientnet_lite0"],
                      "about": ["The competition recipe for one GPU",
                                "Three models trained by one maskclf train"]})


def _render(table, width: int) -> list[str]:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(table)
    return out.getvalue().splitlines()


def _words(lines: list[str]) -> set[str]:
    return {word for line in lines for word in line.split()}


def test_a_table_that_fits_wraps_between_words_only():
    for width in (60, 80):
        lines = _render(frame_table("recipes", FRAME, compact=True), width)
        assert max(len(line) for line in lines) <= width
        assert {"efficientnet_lite0", "per_attribute", "competition"} <= _words(lines)
        assert "name" in lines[2] and "about" in lines[2]  # one header row: a table


def test_a_table_too_wide_becomes_one_block_per_row():
    lines = _render(frame_table("recipes", FRAME, compact=True), 40)
    assert max(len(line) for line in lines) <= 40
    assert {"efficientnet_lite0", "per_attribute", "competition"} <= _words(lines)
    assert sum(line.split()[:1] == ["name"] for line in lines) == 2  # one block per row


def test_counts_agree_with_their_nouns():
    assert (plural(1, "run"), plural(2, "run"), plural(0, "run")) == ("1 run", "2 runs",
                                                                      "0 runs")
