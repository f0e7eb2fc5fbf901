"""The few figure types reports need, drawn and saved atomically as PNG files.

Figures use matplotlib's object API (``Figure``), not pyplot: nothing global changes (no
backend switch, no figure registry), so importing maskclf leaves a user's plotting alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
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
    """Counts as a heatmap, rows true and columns predicted, every cell labelled in black or
    white by the luminance of its own colour, so light cells never get white text."""
    image = ax.imshow(matrix, cmap="Blues")
    ax.set(title=title, xlabel="predicted", ylabel="true", xticks=range(len(names)),
           yticks=range(len(names)))
    ax.set_xticklabels(names, rotation=90, fontsize=7)
    ax.set_yticklabels(names, fontsize=7)
    for (row, col), count in np.ndenumerate(matrix):
        red, green, blue, _ = image.cmap(image.norm(count))
        dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
        ax.text(col, row, str(count), ha="center", va="center", fontsize=6,
                color="white" if dark else "black" if count else "0.6")


def bar_figure(values: Sequence[float], names: Sequence[str], title: str, path: Path,
               xlabel: str = "") -> Path:
    figure = Figure(figsize=(8, 0.3 * len(names) + 1.2))
    draw_bars(figure.subplots(), values, names, title, xlabel)
    return save(figure, path)


def draw_bars(ax: Axes, values: Sequence[float], names: Sequence[str], title: str,
              xlabel: str = "") -> None:
    """Horizontal bars, each labelled with its value (a zero bar still shows 0.00)."""
    bars = ax.barh(range(len(names)), values, color="tab:blue")
    ax.bar_label(bars, fmt="%.2f", padding=2, fontsize=7)
    ax.set(title=title, xlabel=xlabel, yticks=range(len(names)))
    ax.set_xlim(0, max(1.0, float(np.max(values, initial=0)) * 1.12))
    ax.set_yticklabels(names, fontsize=8)
    ax.invert_yaxis()


def image_grid(images: Sequence[np.ndarray], captions: Sequence[str], title: str, path: Path,
               columns: int = 6, thumbnail: int = 160) -> Path:
    """Images with a caption under each, ``columns`` per row, each shrunk to at most
    ``thumbnail`` pixels a side (a grid of full-size photos weighs megabytes).

    The spacing is fixed instead of ``tight_layout``, which measured every one of the
    dozens of titles and took most of a report's time; an inch at the top keeps the title
    clear of the first row's captions.
    """
    rows = max(1, -(-len(images) // columns))
    height = 2.6 * rows + 1.0  # inches: the rows, then room for the title
    figure = Figure(figsize=(2.0 * columns, height))
    axes = figure.subplots(rows, columns, squeeze=False,
                           gridspec_kw={"left": 0.01, "right": 0.99, "bottom": 0.01,
                                        "top": 1 - 1.0 / height, "hspace": 0.45,
                                        "wspace": 0.05})
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption in zip(axes.flat, images, captions, strict=False):
        ax.imshow(_shrink(image, thumbnail))
        ax.set_title(caption, fontsize=7)
    figure.suptitle(title, y=1 - 0.25 / height)
    return save(figure, path, tight=False)


def _shrink(image: np.ndarray, side: int) -> np.ndarray:
    scale = side / max(image.shape[:2])
    if scale >= 1:
        return image
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def unit_scaled(maps: np.ndarray) -> np.ndarray:
    """Activation maps (N x h x w) scaled to 0-1 each, as grad-cam scales its own."""
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    return ((maps - low) / np.maximum(span, 1e-7)).astype(np.float32)


def heat_overlay(crop: np.ndarray, heat: np.ndarray, weight: float = 0.5) -> np.ndarray:
    """An activation map (0-1, any size) in the jet colours over an RGB uint8 crop: red
    where the network looked most, blue where least (grad-cam's own rendering)."""
    heat = cv2.resize(np.clip(heat, 0, 1).astype(np.float32), (crop.shape[1], crop.shape[0]))
    colours = cv2.cvtColor(cv2.applyColorMap(np.uint8(255 * heat), cv2.COLORMAP_JET),
                           cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(colours, weight, crop, 1 - weight, 0)


def map_sheet(rows: Sequence[Sequence[np.ndarray]], titles: Sequence[Sequence[str]],
              row_labels: Sequence[str], title: str, path: Path, side: float = 1.9) -> Path:
    """A table of pictures (a row per image or group; the same number in every row), a
    title over each picture and a label left of each row."""
    columns = max(len(row) for row in rows)
    height = side * 1.35 * len(rows) + 0.8
    figure = Figure(figsize=(side * columns + 1.8, height))
    axes = figure.subplots(len(rows), columns, squeeze=False,
                           gridspec_kw={"left": 1.8 / (side * columns + 1.8), "right": 0.99,
                                        "bottom": 0.01, "top": 1 - 0.8 / height,
                                        "hspace": 0.5, "wspace": 0.08})
    for r, (row, names) in enumerate(zip(rows, titles, strict=True)):
        for c, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(row):
                ax.axis("off")
                continue
            ax.imshow(row[c])
            ax.set_title(names[c], fontsize=7)
        axes[r][0].set_ylabel(row_labels[r], fontsize=7, rotation=0, ha="right", va="center")
    figure.suptitle(title, y=1 - 0.3 / height, fontsize=9)
    return save(figure, path, tight=False)


def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Two RGB images at the height of the shorter, a white gap between them."""
    height = min(left.shape[0], right.shape[0])
    parts = [cv2.resize(image, (max(1, round(image.shape[1] * height / image.shape[0])),
                                height), interpolation=cv2.INTER_AREA)
             for image in (left, right)]
    gap = np.full((height, max(2, height // 20), 3), 255, np.uint8)
    return np.concatenate([parts[0], gap, parts[1]], axis=1)


def forest_figure(rows: Sequence[tuple[str, dict, dict]], metrics: Sequence[str], title: str,
                  xlabel: str, path: Path) -> Path:
    """Differences as points with their intervals, one panel per metric, zero marked: an
    interval that crosses the line is noise. ``rows``: (label, {metric: {value, low,
    high}}, {metric: verdict}), drawn top to bottom."""
    figure = Figure(figsize=(3.2 * len(metrics), 0.5 * len(rows) + 1.6))
    axes = figure.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
    colours = {"better": "tab:green", "worse": "tab:red", "within noise": "tab:gray"}
    for ax, metric in zip(axes, metrics, strict=True):
        for row, (_, difference, verdict) in enumerate(rows):
            colour = colours[verdict[metric]]
            ax.plot([difference[metric]["low"], difference[metric]["high"]], [row, row],
                    color=colour, lw=2)
            ax.plot(difference[metric]["value"], row, "o", color=colour)
        ax.axvline(0, color="black", lw=0.8, ls="--")
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
    axes[0].set_yticks(range(len(rows)), [label for label, _, _ in rows], fontsize=8)
    axes[0].invert_yaxis()
    figure.suptitle(title, fontsize=9)
    return save(figure, path)
