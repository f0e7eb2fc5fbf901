"""A report per run: the recipe, findings with remedies (``advice``), curves, confusion
matrices, per-class F1, the most confident mistakes.

Everything is read back from the run directory (fold metrics.csv, oof.csv, summary.json),
so ``maskclf report RUN`` can redraw any finished run; ``train`` calls it at the end.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from maskclf import labels
from maskclf.advice import Finding, findings, recipe_lines
from maskclf.atomic import atomic_write_text
from maskclf.data.io import read_rgb
from maskclf.metrics import TRAIN_LOSS, VAL_F1, VAL_LOSS, attribute_confusions, confusion, score
from maskclf.plots import bar_figure, confusion_figure, image_grid, save
from maskclf.rundir import RunDir
from maskclf.submission import CLASS_COLUMNS


def fold_curves(run: Path) -> dict[str, pd.DataFrame]:
    """Per-epoch metrics of every fold (the last row logged in each epoch), by fold folder."""
    return {str(file.parent.relative_to(run)): pd.read_csv(file).groupby("epoch").last()
            for file in RunDir(run).metrics_files()}


def _curves(curves: dict[str, pd.DataFrame], path: Path) -> Path | None:
    """Train/validation loss and validation macro F1 per epoch, one line per fold."""
    if not curves:
        return None
    figure = Figure(figsize=(11, 4))
    loss_ax, f1_ax = figure.subplots(1, 2)
    for fold, epochs in curves.items():
        if TRAIN_LOSS in epochs:
            loss_ax.plot(epochs.index + 1, epochs[TRAIN_LOSS], label=f"{fold} train")
        if VAL_LOSS in epochs:
            loss_ax.plot(epochs.index + 1, epochs[VAL_LOSS], "--", label=f"{fold} val")
        if VAL_F1 in epochs:
            f1_ax.plot(epochs.index + 1, epochs[VAL_F1], marker=".", label=fold)
    loss_ax.set(title="loss", xlabel="epoch")
    f1_ax.set(title="validation macro F1", xlabel="epoch")
    for ax in (loss_ax, f1_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return save(figure, path)


def _confusions(truth: np.ndarray, predicted: np.ndarray, path: Path) -> tuple[Path, np.ndarray]:
    matrix = confusion(truth, predicted)
    figure = Figure(figsize=(13, 9))
    grid = figure.add_gridspec(3, 2, width_ratios=[2.2, 1])
    confusion_figure(matrix, labels.class_names(), "18 classes (out-of-fold)",
                     figure.add_subplot(grid[:, 0]))
    for row, (name, counts) in enumerate(attribute_confusions(truth, predicted).items()):
        confusion_figure(counts, labels.ATTRIBUTES[name], name, figure.add_subplot(grid[row, 1]))
    return save(figure, path), matrix


def _mistakes(oof: pd.DataFrame, predicted: np.ndarray, data_root: Path, path: Path,
              count: int) -> tuple[Path | None, pd.DataFrame]:
    """The wrong predictions made with the highest confidence, as a captioned grid."""
    probs = oof[CLASS_COLUMNS].to_numpy()
    wrong = oof.assign(predicted=predicted, confidence=probs.max(axis=1))
    wrong = wrong[wrong["predicted"] != wrong["class"]].nlargest(count, "confidence")
    names = labels.class_names()
    if wrong.empty:
        return None, wrong
    paths = [data_root / p for p in wrong["ImageID"]]
    if not all(p.is_file() for p in paths):
        return None, wrong
    captions = [f"true {names[t]}\npred {names[p]} ({c:.2f})"
                for t, p, c in zip(wrong["class"], wrong["predicted"], wrong["confidence"],
                                   strict=True)]
    return image_grid([read_rgb(p) for p in paths], captions, "most confident mistakes",
                      path), wrong


def _found_rates(tests: dict) -> list[str]:
    """Recipe lines for ``optim.lr: auto``: each network's rate and the plot behind it."""
    return [f"- {task} network: lr {test['suggested_lr']:.3g} found by the range test "
            f"({test['steps_run']} steps from {test['min_lr']:g} to {test['max_lr']:g}; "
            f"![lr-find {task}]({test['plot']}))" for task, test in tests.items()]


def _markdown(run: Path, summary: dict, figures: dict[str, Path | None],
              mistakes: pd.DataFrame, recipe: list[str], found: list[Finding]) -> str:
    lines = [f"# Run `{run.name}`", "", "## Recipe", "", *recipe, "", "## Findings", ""]
    lines += ([finding.markdown() for finding in found] if found
              else ["Nothing flagged: no fold still improving at its last epoch, every class "
                    "and attribute value predicted, no large train/validation gap."])
    lines.append("")
    validation, cv = summary.get("validation"), summary.get("cv")
    if validation is None:
        lines += ["Trained without validation: no scores.", ""]
    else:
        attributes = validation["attribute_f1"]
        lines += ["| OOF macro F1 | CV mean ± std | mask F1 | gender F1 | age F1 | images |",
                  "|---|---|---|---|---|---|",
                  f"| {validation['macro_f1']:.4f} | {cv['macro_f1_mean']:.4f} ± "
                  f"{cv['macro_f1_std']:.4f} | {attributes['mask']:.4f} | "
                  f"{attributes['gender']:.4f} | {attributes['age']:.4f} | {validation['n']} |",
                  "", "| fold | macro F1 | mask | gender | age | images |",
                  "|---|---|---|---|---|---|"]
        for fold in summary["folds"]:
            if "macro_f1" in fold:
                a = fold["attribute_f1"]
                lines.append(f"| {fold['fold']} | {fold['macro_f1']:.4f} | {a['mask']:.4f} | "
                             f"{a['gender']:.4f} | {a['age']:.4f} | {fold['n']} |")
        lines.append("")
    captions = {"curves": "Loss and validation macro F1 per epoch",
                "confusion": "Confusion matrices (rows true, columns predicted)",
                "class_f1": "Per-class F1 (support in brackets)",
                "mistakes": "Most confident mistakes"}
    for key, path in figures.items():
        if path is not None:
            lines += [f"## {captions[key]}", "", f"![{key}]({path.name})", ""]
    if not mistakes.empty:
        names = labels.class_names()
        lines += ["| image | true | predicted | confidence |", "|---|---|---|---|"]
        lines += [f"| {image} | {names[true]} | {names[guess]} | {confidence:.3f} |"
                  for image, true, guess, confidence in zip(
                      mistakes["ImageID"], mistakes["class"], mistakes["predicted"],
                      mistakes["confidence"], strict=True)]
        lines.append("")
    return "\n".join(lines)


def write_report(run_path: Path | str, data_root: Path | str | None = None,
                 mistakes: int = 24) -> dict:
    """Write ``RUN/report/`` (report.md and PNG figures); images come from ``data_root``,
    by default the data folder the run recorded."""
    run = RunDir.open(run_path)
    summary = run.read_summary()
    data_root = run.data_root(data_root)
    out = run.file(RunDir.REPORT)
    out.mkdir(exist_ok=True)
    curves = fold_curves(run.path)
    figures: dict[str, Path | None] = {"curves": _curves(curves, run.report_file("curves"))}
    wrong, matrix, truth, predicted = pd.DataFrame(), None, None, None
    if run.file(RunDir.OOF).is_file():
        oof = pd.read_csv(run.file(RunDir.OOF))
        truth = oof["class"].to_numpy()
        predicted = oof[CLASS_COLUMNS].to_numpy().argmax(axis=1)
        figures["confusion"], matrix = _confusions(truth, predicted, run.report_file("confusion"))
        scores = score(truth, predicted)
        names = [f"{n} ({s})" for n, s in zip(labels.class_names(), scores["class_support"],
                                               strict=True)]
        figures["class_f1"] = bar_figure(scores["class_f1"], names, "per-class F1 (OOF)",
                                         run.report_file("class_f1"), "F1")
        figures["mistakes"], wrong = _mistakes(oof, predicted, data_root,
                                               run.report_file("mistakes"), mistakes)
    cfg = run.read_config()
    found = findings(curves, truth, predicted, str(run.path), cfg)
    recipe = recipe_lines(cfg) + _found_rates(run.read_record().get("lr_find", {}))
    atomic_write_text(run.report_file("report"), _markdown(run.path, summary, figures, wrong,
                                                   recipe, found))
    return {"dir": str(out), "report": str(run.report_file("report")),
            "findings": [{"what": f.what, "remedy": f.remedy} for f in found],
            "figures": {k: str(v) for k, v in figures.items() if v is not None},
            "confusion": None if matrix is None else matrix.tolist()}
