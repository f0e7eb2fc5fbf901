"""``maskclf compare``: runs or prediction files scored on the same images and the same
resampled persons, each against the first, with the interval of every difference.

A run brings its out-of-fold rows (labels and persons inside); a prediction file or a
submission needs a labels file that names each image's class and person. Only the images
every input shares count: runs validated on different persons are compared where they
overlap, and the result says how many images that is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from maskclf.atomic import check_target
from maskclf.errors import InputFileError, UsageError
from maskclf.intervals import (
    METRICS,
    PERSON_COLUMNS,
    Interval,
    PersonBootstrap,
    interval_dict,
)
from maskclf.labels import truth_codes
from maskclf.metrics import checked_truth
from maskclf.reports.plots import forest_figure
from maskclf.results.ensemble import classes_of, read_any
from maskclf.results.submission import oof_persons
from maskclf.runs.directory import RunDir
from maskclf.tables import check_rows, read_table


@dataclass(frozen=True)
class Source:
    """One input: predicted classes by ImageID, and for a run its own labels and persons."""

    name: str
    path: Path
    predicted: pd.Series
    labels: pd.DataFrame | None  # index ImageID; columns truth (labels.truth_codes), person


def read_source(path: Path | str) -> Source:
    """A run directory (its ``oof.csv``), an OOF file (``maskclf oof --tta``'s: labels and
    persons inside), or a prediction file or submission."""
    path = Path(path)
    table = RunDir.open(path).require_oof("compare") if path.is_dir() else read_any(path)
    ids = table["ImageID"].astype(str)
    labelled = None
    if "class" in table.columns:  # out-of-fold rows carry their labels and persons
        labelled = pd.DataFrame({"truth": truth_codes(table),
                                 "person": oof_persons(table).to_numpy()}, index=ids)
    return Source(path.name, path, pd.Series(classes_of(table), index=ids), labelled)


def read_labels(path: Path | str) -> pd.DataFrame:
    """A labels file: ``ImageID``, ``class`` and the person of each image, and optionally
    ``unknown`` (``labels.UNKNOWN_COLUMN``: bits of attributes a row's label does not know,
    e.g. gender and age of a photo of someone else: 6)."""
    table = check_rows(read_table(path, ["ImageID", "class"], "labels file",
                                  dtype={"ImageID": str}), path, "labels file")
    column = next((c for c in PERSON_COLUMNS if c in table.columns), None)
    if column is None:
        raise InputFileError(f"labels file {path} names no persons (no "
                             f"{' or '.join(PERSON_COLUMNS)} column): intervals resample "
                             "persons, since one person's images are not independent")
    return pd.DataFrame({"truth": checked_truth(table, path, "labels file"),
                         "person": table[column].astype(str).to_numpy()},
                        index=table["ImageID"])


def _unique_names(sources: list[Source]) -> list[str]:
    """Folder or file names; files of the same name by their folder too
    (``run-a/submission.csv``); a path given again by its place (``a#3``)."""
    paths = {s.path.resolve() for s in sources}
    shared = {s.name for s in sources
              if sum(p.name == s.path.name for p in paths) > 1}
    names = [f"{s.path.parent.name}/{s.name}" if s.name in shared else s.name
             for s in sources]
    return [name if name not in names[:i] else f"{name}#{i + 1}" for i, name in
            enumerate(names)]


def check_request(inputs: list[Path], labels: Path | None, draws: int,
                  plot: Path | None) -> None:
    """Everything about the flags, before any file is read."""
    if len(inputs) < 2:
        raise UsageError(f"compare needs at least two runs or prediction files; got "
                         f"{len(inputs)}")
    if draws < 100:
        raise UsageError(f"--draws {draws}: give at least 100 bootstrap draws (1000 is the "
                         "default)")
    for path in [*inputs, *([labels] if labels else [])]:
        if not Path(path).exists():
            raise UsageError(f"{path} does not exist")
    if plot is not None:
        check_target(plot)


def compare(inputs: list[Path], labels: Path | None = None, draws: int = 1000,
            seed: int = 0, plot: Path | None = None) -> dict:
    """Score every input on the images they all share, paired over persons; each input
    after the first gets its difference from the first with a 95 % interval and a verdict
    (better / worse / within noise). ``plot`` draws the differences as a forest plot."""
    check_request(inputs, labels, draws, plot)
    sources = [read_source(path) for path in inputs]
    truth = read_labels(labels) if labels is not None else next(
        (s.labels for s in sources if s.labels is not None), None)
    if truth is None:
        raise UsageError("prediction files carry no labels: give --labels FILE (ImageID, "
                         "class and person of each image)")
    shared = truth.index
    for source in sources:
        shared = shared.intersection(source.predicted.index)
    names = _unique_names(sources)
    if shared.empty:
        raise InputFileError(
            "no image is in every input and the labels: "
            + "; ".join(f"{name}: {len(s.predicted)} images" for name, s in
                        zip(names, sources, strict=True))
            + " (runs validated on other persons, or predictions for other images)")
    shared = shared.sort_values()
    notes = [f"{name}: {len(s.predicted) - len(shared)} of its {len(s.predicted)} images "
             "are not in every input and are left out"
             for name, s in zip(names, sources, strict=True) if len(s.predicted) > len(shared)]
    disagreeing = [name for name, s in zip(names, sources, strict=True) if s.labels is not None
                   and not s.labels.loc[shared, "truth"].equals(truth.loc[shared, "truth"])]
    if disagreeing:
        notes.append(f"{', '.join(disagreeing)} labels some images otherwise (corrections?); "
                     "every input is scored against "
                     + (str(labels) if labels is not None else f"{names[0]}'s labels"))
    boot = PersonBootstrap(truth.loc[shared, "truth"].to_numpy(),
                           truth.loc[shared, "person"].to_numpy(), draws=draws, seed=seed)
    result = boot.compare([s.predicted.loc[shared].to_numpy() for s in sources])
    systems = []
    for i, (name, source) in enumerate(zip(names, sources, strict=True)):
        entry = {"name": name, "path": str(source.path),
                 "scores": interval_dict(result.scores[i])}
        if i:
            entry["difference"] = interval_dict(result.difference(i))
            entry["verdict"] = result.verdicts(i)
        systems.append(entry)
    payload = {"images": len(shared), "persons": boot.n_persons, "draws": draws,
               "seed": seed, "level": boot.level, "metrics": list(METRICS),
               "reference": names[0], "systems": systems, "notes": notes}
    if plot is not None:
        forest_figure([(entry["name"], entry["difference"], entry["verdict"])
                       for entry in systems[1:]], METRICS,
                      f"paired differences, {boot.level:.0%} intervals over {boot.n_persons} "
                      f"persons ({draws} draws)", f"minus {names[0]}", Path(plot))
        payload["plot"] = str(plot)
    return payload


def differences_table(payload: dict) -> pd.DataFrame:
    """The table ``compare`` prints: one row per input and metric, its score and its
    difference from the first input with the interval (each score's own interval is in
    the JSON: the 80-column table keeps the one that decides)."""
    rows = []
    for entry in payload["systems"]:
        for metric in payload["metrics"]:
            row = {"input": entry["name"], "metric": metric,
                   "score": f"{entry['scores'][metric]['value']:.4f}",
                   "vs first [95% CI]": "", "verdict": ""}
            if "difference" in entry:
                difference = Interval(**entry["difference"][metric])
                row["vs first [95% CI]"] = difference.text(signed=True)
                row["verdict"] = entry["verdict"][metric]
            rows.append(row)
    return pd.DataFrame(rows)
