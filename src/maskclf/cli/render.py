"""Rich tables and lines for the CLI's human output; the library returns plain data."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from rich import box
from rich.markup import escape
from rich.table import Table

from maskclf import labels


def score_table(title: str, scores: dict) -> Table:
    """The figures of a scoring; with ``scores["interval"]`` (the labels named persons) a
    column with each one's 95% person-bootstrap interval."""
    interval = scores.get("interval")
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    if interval:
        table.add_column(f"{interval['level']:.0%} CI ({interval['persons']} persons)",
                         justify="right")

    def row(name: str, value: float, metric: str) -> None:
        cells = [name, f"{value:.4f}"]
        if interval:
            cells.append(f"[{interval[metric]['low']:.3f}, {interval[metric]['high']:.3f}]")
        table.add_row(*cells)

    table.add_row("images", str(scores["n"]), *([""] if interval else []))
    row("accuracy", scores["accuracy"], "accuracy")
    row("macro F1 (18 classes)", scores["macro_f1"], "macro_f1")
    for name, value in scores["attribute_f1"].items():
        row(f"{name} macro F1", value, f"{name}_f1")
    return table


def fold_table(summary: dict) -> Table:
    table = Table(title="per fold (best checkpoint)")
    for column in ("fold", "images", "accuracy", "macro F1", "mask", "gender", "age"):
        table.add_column(column, justify="right")
    for row in summary["folds"]:
        if "macro_f1" in row:
            table.add_row(str(row["fold"]), str(row["n"]), f"{row['accuracy']:.4f}",
                          f"{row['macro_f1']:.4f}",
                          *(f"{v:.4f}" for v in row["attribute_f1"].values()))
    cv = summary["cv"]
    table.add_section()
    table.add_row("mean ± std", "", "", f"{cv['macro_f1_mean']:.4f} ± {cv['macro_f1_std']:.4f}",
                  "", "", "")
    table.add_row("pooled OOF", "", "", f"{cv['oof_macro_f1']:.4f}", "", "", "")
    return table


def class_table(scores: dict) -> Table:
    table = Table(title="per-class F1")
    for column in ("class", "name", "F1", "support"):
        table.add_column(column, justify="right" if column != "name" else "left")
    names = labels.class_names()
    for cls, (f1, support) in enumerate(zip(scores["class_f1"], scores["class_support"],
                                            strict=True)):
        table.add_row(str(cls), names[cls], f"{f1:.3f}", str(support))
    return table


def plural(count: int, noun: str) -> str:
    """``1 run``, ``2 runs``: counts agree with their nouns."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


class FrameTable:
    """A table of a data frame that stays readable at any width: columns as wide as their
    longest word (a cell wraps between words, never inside one, and never ends in "…");
    when those columns do not fit the terminal, one block per row instead (``column
    value`` lines), so no column is squeezed to a letter."""

    MAX_WORD = 30
    """A longer word (a path) may fold inside its column."""

    def __init__(self, title: str, frame: pd.DataFrame, floats: str = "{:.4g}",
                 compact: bool = False):
        self.title, self.compact = title, compact
        self.columns = [str(column) for column in frame.columns]
        self.rows = [["" if value is None or value != value  # NaN
                      else floats.format(value) if isinstance(value, float)
                      else escape(str(value)) for value in row]
                     for row in frame.itertuples(index=False)]

    def _texts(self, index: int) -> list[str]:
        return [self.columns[index], *(row[index] for row in self.rows)]

    def _min_width(self, index: int) -> int:
        words = [word for text in self._texts(index) for word in text.split()]
        return min(self.MAX_WORD, max((len(word) for word in words), default=1))

    def _widths(self, room: int) -> list[int] | None:
        """Column widths for ``room`` characters: each column's longest word, then the
        room left shared out up to each column's longest cell; None when the words alone
        do not fit."""
        widths = [self._min_width(i) for i in range(len(self.columns))]
        wanted = [max(width, *(len(text) for text in self._texts(i)))
                  for i, width in enumerate(widths)]
        left = room - sum(widths)
        if left < 0:
            return None
        while left > 0 and widths != wanted:
            for i in range(len(widths)):
                if left and widths[i] < wanted[i]:
                    widths[i] += 1
                    left -= 1
        return widths

    def _table(self, widths: list[int]) -> Table:
        table = (Table(title=self.title, box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
                 if self.compact else Table(title=self.title))
        for column, width in zip(self.columns, widths, strict=True):
            table.add_column(column, overflow="fold", width=width)
        for row in self.rows:
            table.add_row(*row)
        return table

    def _records(self) -> Table:
        table = Table(title=self.title, box=box.SIMPLE_HEAD, show_header=False)
        table.add_column("column", style="bold", no_wrap=True)
        table.add_column("value", overflow="fold")
        for i, row in enumerate(self.rows):
            if i:
                table.add_section()
            for column, value in zip(self.columns, row, strict=True):
                table.add_row(column, value)
        return table

    def __rich_console__(self, console, options):
        n = len(self.columns)  # padding and a separator between columns, and rules outside
        edges = 3 * (n - 1) + 2 if self.compact else 3 * n + 1
        widths = self._widths(options.max_width - edges)
        yield self._table(widths) if widths is not None else self._records()


def frame_table(title: str, frame: pd.DataFrame, floats: str = "{:.4g}",
                compact: bool = False) -> FrameTable:
    """A table of ``frame`` (see :class:`FrameTable`); ``compact`` drops the frame lines,
    for wide tables on 80 columns."""
    return FrameTable(title, frame, floats, compact)


def diff_lines(result: dict) -> list[str]:
    """How two label files differ: the share, per attribute, the top class transitions."""
    lines = [f"{result['changed']} of {result['n']} labels differ ({result['share']:.2%})"]
    lines += [f"  {name:6s} changed: {count}"
              for name, count in result["attribute_changed"].items()]
    names = labels.class_names()
    lines += [f"  {row['count']:5d}  {row['from']:2d} {names[row['from']]:28s} -> "
              f"{row['to']:2d} {names[row['to']]}" for row in result["transitions"]]
    return lines


def eda_tables(result: dict) -> list[Table | str]:
    """The printed part of an EDA: class counts, attribute counts, gender x age persons."""
    classes = pd.DataFrame({"class": list(result["class_counts"]),
                            "images": list(result["class_counts"].values())})
    gender_age = pd.DataFrame(result["gender_age_persons"]).T.reset_index(names="gender")
    return [frame_table(f"{result['images']} images of {result['persons']} persons", classes),
            *(f"{attribute}: " + ", ".join(f"{k} {v}" for k, v in counts.items())
              for attribute, counts in result["attribute_counts"].items()),
            frame_table("persons by gender and age group", gender_age),
            f"channel mean {result['channel_mean']} std {result['channel_std']}; "
            f"formats {result['formats']}; odd files {len(result['odd_files'])}",
            *(f"outside {Path(s['source']).name}: {s['rows']} rows; they know "
              + ", ".join(f"{name} {count}" for name, count in s["known"].items())
              + f"; channel mean {s['channel_mean']}" for s in result.get("external", [])),
            f"report: {result['report']}"]


def person_vote_line(vote: dict) -> str:
    """What the person vote found on the out-of-fold rows, and whether it was applied."""
    check = vote.get("check")
    found = ("" if check is None else
             f"out-of-fold purity {check['purity']:.3f}, macro F1 {check['f1_before']:.4f} -> "
             f"{check['f1_after']:.4f}; ")
    outcome = "applied" if vote["applied"] else f"not applied ({escape(vote['reason'])})"
    return f"person vote: {found}{outcome}"


def recipes_table(recipes: list[dict]) -> Table:
    columns = ["name", "model", "image_size", "epochs", "about"]  # the head: in --json
    frame = pd.DataFrame(recipes, columns=columns)
    frame["image_size"] = frame["image_size"].map(lambda size: "x".join(map(str, size)))
    return frame_table("recipes (maskclf train --config NAME)",
                       frame.rename(columns={"image_size": "size"}), compact=True)


def correlation_line(found: dict | None) -> str:
    if found is None:
        return "LB vs CV: record public scores of 3 or more runs with `maskclf note RUN --lb F1`"
    return (f"LB vs {found['against']} over {found['runs']} runs: Pearson "
            f"{found['pearson']:.2f}, Spearman {found['spearman']:.2f}")


def note_line(run, notes: list[dict]) -> str:
    """``maskclf note`` as a sentence: what was recorded, and how many notes the run has."""
    latest = notes[-1]
    parts = ([f"public score {latest['lb']:.4f}"] if latest["lb"] is not None else []) + (
        [f"note \"{latest['text']}\""] if latest["text"] else [])
    count = f"{len(notes)} note{'s' if len(notes) != 1 else ''}"
    return f"recorded {' and '.join(parts)} for {run} ({count} in all)."


def auto_table(summary: dict) -> FrameTable:
    """``maskclf auto``: every candidate's run with its time and score, and its weight in
    the chosen ensemble."""
    weights = {m["unit"]: m["weight"] for m in summary["members"]}
    frame = pd.DataFrame([{"unit": r["unit"], "stage": r["stage"], "epochs": r["epochs"],
                           "seconds": r["seconds"], "val F1": r["val_macro_f1"],
                           "weight": weights.get(r["unit"]), "state": r["state"]}
                          for r in summary["candidates"]])
    frame["epochs"] = frame["epochs"].map(lambda e: "" if not e else "/".join(map(str, e)))
    return frame_table("auto: candidates", frame, compact=True)
