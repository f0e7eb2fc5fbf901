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
from maskclf.atomic import atomic_write_text
from maskclf.config import DataConfig, DistillConfig
from maskclf.data.io import read_rgb
from maskclf.data.transforms import evaluation_view
from maskclf.intervals import METRICS
from maskclf.labels import CLASS_COLUMNS
from maskclf.metrics import TRAIN_LOSS, VAL_F1, VAL_LOSS, attribute_confusions, confusion, score
from maskclf.reports.advice import Finding, findings, recipe_lines
from maskclf.reports.plots import (
    bar_figure,
    confusion_figure,
    heat_overlay,
    image_grid,
    map_sheet,
    save,
    side_by_side,
)
from maskclf.runs.directory import RunDir
from maskclf.runs.leaderboard import validation_interval
from maskclf.tables import markdown_table


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


def confident_mistakes(oof: pd.DataFrame, predicted: np.ndarray, count: int = 24
                       ) -> pd.DataFrame:
    """The ``count`` wrong OOF predictions made with the highest confidence (index kept),
    with ``predicted`` and ``confidence`` columns."""
    probs = oof[CLASS_COLUMNS].to_numpy()
    wrong = oof.assign(predicted=predicted, confidence=probs.max(axis=1))
    return wrong[wrong["predicted"] != wrong["class"]].nlargest(count, "confidence")


def read_maps(run: RunDir) -> dict | None:
    """``report/maps.npz`` (see ``explain.write_report_maps``) by image, or None."""
    path = run.file(RunDir.REPORT) / RunDir.REPORT_MAPS
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as stored:
        maps = {key: stored[key] for key in stored.files}
    maps["row"] = {image: i for i, image in enumerate(maps["image"])}
    maps["maps"] = maps["maps"].astype(np.float32) / 255  # 0-1 again
    return maps


def _first_wrong(true: int, predicted: int) -> str:
    """The first attribute a wrong prediction got wrong (mask, then gender, then age)."""
    truth, said = labels.decode_class(int(true)), labels.decode_class(int(predicted))
    return next(name for name, t, p in zip(labels.ATTRIBUTES, truth, said, strict=True)
                if t != p)


def _mistakes(wrong: pd.DataFrame, data_root: Path, path: Path, maps: dict | None,
              data: DataConfig) -> Path | None:
    """The confident mistakes as a captioned grid: each photo, and beside it the crop the
    network saw with the map of the attribute it got wrong (when the run has maps)."""
    names = labels.class_names()
    paths = [data_root / p for p in wrong["ImageID"]]
    if wrong.empty or not all(p.is_file() for p in paths):
        return None
    images, captions = [], []
    for file, image_id, true, said, confidence in zip(
            paths, wrong["ImageID"], wrong["class"], wrong["predicted"], wrong["confidence"],
            strict=True):
        photo = read_rgb(file)
        caption = f"true {names[true]}\npred {names[said]} ({confidence:.2f})"
        row = None if maps is None else maps["row"].get(image_id)
        if row is not None:
            attribute = _first_wrong(true, said)
            crop = evaluation_view(file, data)
            heat = maps["maps"][row, list(labels.ATTRIBUTES).index(attribute)]
            photo = side_by_side(photo, heat_overlay(crop, heat))
            caption += f"\nmap: {attribute}"
        images.append(photo)
        captions.append(caption)
    return image_grid(images, captions, "most confident mistakes" + (
        "" if maps is None else " (right: where the network looked for the attribute it got "
        "wrong)"), path, columns=4 if maps is not None else 6,
        thumbnail=240 if maps is not None else 160)


def face_shares(maps: dict, crop_size: tuple[int, int]) -> dict[str, tuple[float, int, float]]:
    """Per attribute: the median share of a map's mass inside the face box found in the
    crop, over how many crops (those where a face was found), and the median share of the
    crop's area the box covers (what a map that looks everywhere alike would score)."""
    shares: dict[str, list[float]] = {name: [] for name in labels.ATTRIBUTES}
    areas = []
    for heat, box in zip(maps["maps"], maps["face"], strict=True):
        if box[2] <= 0:
            continue
        scale = np.array([heat.shape[2] / crop_size[1], heat.shape[1] / crop_size[0]] * 2)
        x, y, w, h = np.round(np.asarray(box) * scale).astype(int)
        areas.append(w * h / (heat.shape[1] * heat.shape[2]))
        for index, name in enumerate(labels.ATTRIBUTES):
            total = float(heat[index].sum())
            if total > 0:
                shares[name].append(float(heat[index, y:y + h, x:x + w].sum()) / total)
    return {name: (float(np.median(values)), len(values), float(np.median(areas)))
            for name, values in shares.items() if values}


def _attention(maps: dict, data_root: Path, data: DataConfig, path: Path) -> Path:
    """Mean maps over the mean crop: a row per attribute's map, a column per true mask
    status, then that attribute right and wrong."""
    crops = np.stack([evaluation_view(data_root / image, data) for image in maps["image"]])
    heat = maps["maps"].astype(np.float32)
    truth, said = (np.stack(labels.decode_class(maps[key].astype(int)), axis=1)
                   for key in ("true", "predicted"))
    rows, titles, row_labels = [], [], []
    for index, name in enumerate(labels.ATTRIBUTES):
        groups = [(f"{mask}", truth[:, 0] == value)
                  for value, mask in enumerate(labels.MASK_NAMES)]
        groups += [(f"{name} right", truth[:, index] == said[:, index]),
                   (f"{name} wrong", truth[:, index] != said[:, index])]
        pictures, names = [], []
        for title, chosen in groups:
            if not chosen.any():
                pictures.append(np.full_like(crops[0], 255))
                names.append(f"{title} (none)")
                continue
            mean = crops[chosen].mean(axis=0).astype(np.uint8)
            pictures.append(heat_overlay(mean, heat[chosen, index].mean(axis=0)))
            names.append(f"{title} (n={int(chosen.sum())})")
        rows.append(pictures)
        titles.append(names)
        row_labels.append(f"{name} map")
    return map_sheet(rows, titles, row_labels, f"mean {maps['method']} maps over the mean "
                     "crop, by true mask status and by whether the attribute was right", path)


def _found_rates(tests: dict) -> list[str]:
    """Recipe lines for ``optim.lr: auto``: each network's rate and the plot behind it."""
    return [f"- {task} network: lr {test['suggested_lr']:.3g} found by the range test "
            f"({test['steps_run']} steps from {test['min_lr']:g} to {test['max_lr']:g}; "
            f"![lr-find {task}]({test['plot']}))" for task, test in tests.items()]


def _distilled(cfg: DistillConfig, compared: dict | None) -> list[str]:
    """Recipe lines of a student: its teacher and both OOF F1 on the same rows."""
    if cfg.teacher is None:
        return []
    lines = [f"- distilled from `{cfg.teacher}` (alpha {cfg.alpha:g}, temperature "
             f"{cfg.temperature:g})"]
    if compared is not None:
        attributes = "; ".join(
            f"{who} " + ", ".join(f"{name} {f1:.4f}"
                                  for name, f1 in compared[f"{who}_attribute_f1"].items())
            for who in ("teacher", "student"))
        lines.append(f"- on the same {compared['n']} validation images: teacher OOF macro F1 "
                     f"{compared['teacher_macro_f1']:.4f}, student "
                     f"{compared['student_macro_f1']:.4f} ({attributes})")
    return lines


def _corrections(counts: dict | None) -> list[str]:
    """What ``data.corrections`` changed and made unknown: never silent."""
    if counts is None:
        return []
    unknown = ", ".join(f"{name} of {n}" for name, n in counts["unknown_images"].items() if n)
    return [f"Label corrections (`{Path(counts['file']).name}`): "
            f"{counts['changed_images']} image label(s) of {counts['changed_persons']} "
            f"person(s) changed; " + (f"made unknown: {unknown} image(s) (trained as "
                                       "partial rows, left out of that attribute's scores)"
                                       if unknown else "none made unknown")
            + (f"; {len(counts['absent'])} id(s) or image(s) not in this data"
               if counts["absent"] else ""), ""]


def _markdown(run: Path, summary: dict, figures: dict[str, Path | None],
              mistakes: pd.DataFrame, recipe: list[str], found: list[Finding],
              maps: dict | None, shares: dict[str, tuple[float, int, float]]) -> str:
    lines = [f"# Run `{run.name}`", "", "## Recipe", "", *recipe, ""]
    if summary.get("external"):
        lines += ["Outside rows (training only; each attribute learnt from the rows that know "
                  "it):", "", *markdown_table(
                      ["source", "rows", "know mask", "know gender", "know age"],
                      [[Path(s["source"]).name, s["rows"], *s["known"].values()]
                       for s in summary["external"]]), ""]
    lines += _corrections(summary.get("corrections"))
    lines += ["## Findings", ""]
    lines += ([finding.markdown() for finding in found] if found
              else ["Nothing flagged: no fold still improving at its last epoch, every class "
                    "and attribute value predicted, no large train/validation gap."])
    lines.append("")
    validation, cv = summary.get("validation"), summary.get("cv")
    if validation is None:
        lines += ["Trained without validation: no scores.", ""]
    else:
        attributes = validation["attribute_f1"]
        lines += markdown_table(
            ["OOF macro F1", "CV mean ± std", "mask F1", "gender F1", "age F1", "images"],
            [[f"{validation['macro_f1']:.4f}",
              f"{cv['macro_f1_mean']:.4f} ± {cv['macro_f1_std']:.4f}",
              *(f"{attributes[a]:.4f}" for a in labels.ATTRIBUTES), validation["n"]]])
        interval = validation_interval(RunDir(run))
        if interval is not None:
            lines += ["", f"{interval['level']:.0%} intervals over {interval['persons']} "
                      f"persons (person bootstrap, {interval['draws']} draws; `maskclf compare` "
                      "pairs two runs on the same draws): " + ", ".join(
                          f"{metric.removesuffix('_f1').replace('_', ' ')} "
                          f"[{interval[metric]['low']:.3f}, {interval[metric]['high']:.3f}]"
                          for metric in METRICS)]
        lines += ["", *markdown_table(
            ["fold", "macro F1", "mask", "gender", "age", "images"],
            [[fold["fold"], f"{fold['macro_f1']:.4f}",
              *(f"{fold['attribute_f1'][a]:.4f}" for a in labels.ATTRIBUTES), fold["n"]]
             for fold in summary["folds"] if "macro_f1" in fold]), ""]
    captions = {"curves": "Loss and validation macro F1 per epoch",
                "confusion": "Confusion matrices (rows true, columns predicted)",
                "class_f1": "Per-class F1 (support in brackets)",
                "mistakes": "Most confident mistakes",
                "attention": "Where the networks looked (mean activation maps)"}
    for key, path in figures.items():
        if path is not None:
            lines += [f"## {captions[key]}", "", f"![{key}]({path.name})", ""]
        if key == "attention" and path is not None:
            lines += [f"{str(maps['method'])} at {str(maps['layer'])}, on {len(maps['image'])} "
                      f"out-of-fold images, each by its own fold's network. Share of each "
                      f"map inside the face box ({str(maps['detector'])} on the crop): "
                      + (", ".join(f"{name} {share:.0%}" for name, (share, _, _) in
                                   shares.items()) + " (medians over the {} crops with a face; "
                         "the box covers {:.0%} of a crop)".format(
                             *next(iter(shares.values()))[1:]) if shares
                         else "no face found in the crops") + ".", ""]
    if not mistakes.empty:
        names = labels.class_names()
        lines += [*markdown_table(
            ["image", "true", "predicted", "confidence"],
            [[image, names[true], names[guess], f"{confidence:.3f}"]
             for image, true, guess, confidence in zip(
                 mistakes["ImageID"], mistakes["class"], mistakes["predicted"],
                 mistakes["confidence"], strict=True)]), ""]
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
    cfg, maps = run.read_config(), read_maps(run)
    figures: dict[str, Path | None] = {"curves": _curves(curves, run.report_file("curves"))}
    wrong, matrix, truth, predicted = pd.DataFrame(), None, None, None
    oof = run.read_oof()
    if oof is not None:
        truth = labels.truth_codes(oof)
        predicted = oof[CLASS_COLUMNS].to_numpy().argmax(axis=1)
        figures["confusion"], matrix = _confusions(truth, predicted, run.report_file("confusion"))
        scores = score(truth, predicted)
        names = [f"{n} ({s})" for n, s in zip(labels.class_names(), scores["class_support"],
                                               strict=True)]
        figures["class_f1"] = bar_figure(scores["class_f1"], names, "per-class F1 (OOF)",
                                         run.report_file("class_f1"), "F1")
        wrong = confident_mistakes(oof, predicted, mistakes)
        figures["mistakes"] = _mistakes(wrong, data_root, run.report_file("mistakes"), maps,
                                        cfg.data)
        if maps is not None:
            figures["attention"] = _attention(maps, data_root, cfg.data,
                                              run.report_file("attention"))
    shares = {} if maps is None else face_shares(maps, tuple(cfg.data.image_size))
    found = findings(curves, truth, predicted, str(run.path), cfg, shares)
    recipe = (recipe_lines(cfg) + _found_rates(run.read_record().get("lr_find", {}))
              + _distilled(cfg.distill, summary.get("distillation")))
    atomic_write_text(run.report_file("report"), _markdown(run.path, summary, figures, wrong,
                                                   recipe, found, maps, shares))
    return {"dir": str(out), "report": str(run.report_file("report")),
            "findings": [{"what": f.what, "remedy": f.remedy} for f in found],
            "figures": {k: str(v) for k, v in figures.items() if v is not None},
            "confusion": None if matrix is None else matrix.tolist()}
