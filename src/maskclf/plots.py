"""The few figure types reports need, drawn and saved atomically as PNG files.

Figures use matplotlib's object API (``Figure``), not pyplot: nothing global changes (no
backend switch, no figure registry), so importing maskclf leaves a user's plotting alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from maskclf.atomic import atomic_write


def save(figure: Figure, path: Path, tight: bool = True) -> Path:
    """Write ``figure`` as PNG to ``path`` (temporary file + rename)."""
    if tight:
        figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100))
    return path


def confusion_figure(matrix: np.ndarray, names: Sequence[str], title: str, ax: Axes) -> None:
    """Counts as a heatmap, rows true and columns predicted, each cell labelled."""
    ax.imshow(matrix, cmap="Blues")
    ax.set(title=title, xlabel="predicted", ylabel="true", xticks=range(len(names)),
           yticks=range(len(names)))
    ax.set_xticklabels(names, rotation=90, fontsize=7)
    ax.set_yticklabels(names, fontsize=7)
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, col), count in np.ndenumerate(matrix):
        if count:
            ax.text(col, row, str(count), ha="center", va="center", fontsize=6,
                    color="white" if count > threshold else "black")


def bar_figure(values: Sequence[float], names: Sequence[str], title: str, path: Path,
               xlabel: str = "") -> Path:
    figure = Figure(figsize=(8, 0.3 * len(names) + 1.2))
    ax = figure.subplots()
    ax.barh(range(len(names)), values, color="tab:blue")
    ax.set(title=title, xlabel=xlabel, yticks=range(len(names)))
    ax.set_yticklabels(names, fontsize=8)
    ax.invert_yaxis()
    return save(figure, path)


def image_grid(images: Sequence[np.ndarray], captions: Sequence[str], title: str, path: Path,
               columns: int = 6) -> Path:
    """Images with a caption under each, ``columns`` per row.

    The spacing is fixed instead of ``tight_layout``, which measured every one of the
    dozens of titles and took most of a report's time.
    """
    rows = max(1, -(-len(images) // columns))
    height = 2.6 * rows + 0.6  # inches: the rows, then room for the title
    figure = Figure(figsize=(2.0 * columns, height))
    axes = figure.subplots(rows, columns, squeeze=False,
                           gridspec_kw={"left": 0.01, "right": 0.99, "bottom": 0.01,
                                        "top": 1 - 0.9 / height, "hspace": 0.45,
                                        "wspace": 0.05})
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption in zip(axes.flat, images, captions, strict=False):
        ax.imshow(image)
        ax.set_title(caption, fontsize=7)
    figure.suptitle(title, y=1 - 0.15 / height)
    return save(figure, path, tight=False)
