"""``maskclf distill``: one student network trained on a teacher's soft targets.

The teacher is a finished run (its ``oof.csv``), an export whose source run is at hand
(each training image predicted by the export's networks of the fold that validated on it),
or several of either, averaged as ``maskclf ensemble`` averages: every training image's
soft targets come from networks that never trained on it. ``OUT/<name>-teacher/`` keeps
them (``teacher.csv``; with ``unlabelled``, the teacher's eval predictions and their
``extra.csv``), and the student is an ordinary run whose config has the ``distill`` section:
``predict``, ``export``, ``serve`` and ``report`` work on it, and its summary puts the
teacher's and the student's OOF F1 on the same rows side by side.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from maskclf import labels
from maskclf.atomic import write_csv, write_json
from maskclf.config import (
    RunConfig,
    absolute_paths,
    apply_overrides,
    build_config,
    config_to_dict,
    load_raw_config,
)
from maskclf.data.datamodule import teacher_probs
from maskclf.data.layout import read_eval
from maskclf.deploy.manifest import is_export
from maskclf.labels import CLASS_COLUMNS
from maskclf.models.weights import PACKAGED
from maskclf.predict.run_backend import open_predictor
from maskclf.results.ensemble import mean_table
from maskclf.results.pseudo_labels import pseudo_label
from maskclf.results.submission import prediction_table
from maskclf.runs.directory import RunDir
from maskclf.train.execute import RunResult, execute
from maskclf.train.plan import plan_new, prepare_records
from maskclf.train.preflight import preflight
from maskclf.train.request import DistillRequest, teacher_run

log = logging.getLogger(__name__)

TEACHER_FILE = "teacher.csv"
EVAL_PREDICTIONS = "eval_predictions.csv"
SOURCES_FILE = "sources.json"


def teacher_predictions(source: Path, data_root: Path) -> pd.DataFrame:
    """Out-of-fold probabilities of every training image of ``source`` (a prediction table
    keyed by image path): a run's own oof.csv, or an export's networks fold by fold."""
    oof = teacher_run(source).require_oof("a teacher")
    if not is_export(source):
        return oof
    probs = open_predictor(source).predict_oof(data_root, oof["ImageID"], oof["fold"])
    return prediction_table(oof["ImageID"], probs)


def student_config(request: DistillRequest, teacher: RunDir) -> RunConfig:
    """``--config`` (default: the teacher's own config, as one network validated on
    ``data.val_ratio`` of the persons, mixing off) with the student's model, then ``-o``."""
    if request.config is not None:
        raw = load_raw_config(request.config)
        raw.setdefault("model", {})
    else:
        raw = config_to_dict(teacher.read_config())
        raw["data"].update(folds=0, val_ratio=raw["data"]["val_ratio"] or 0.2, extra=[])
        raw["aug"].update(mixup_alpha=0.0, cutmix_alpha=0.0, cutmix_mode="box")
        raw["model"].update(head="single" if raw["model"]["head"] == "per_attribute"
                            else raw["model"]["head"])
        raw["train"].update(average_checkpoints=0)
    weights = raw["model"].get("weights")
    if weights in PACKAGED and weights != request.student:  # weights of the teacher's model
        raw["model"]["weights"] = request.student if request.student in PACKAGED else None
        if raw["model"]["weights"] is None:
            log.warning("no packaged weights for %s: the student starts from scratch (set "
                        "-o model.weights=FILE or model.pretrained=true)", request.student)
    raw["model"]["name"] = request.student
    overrides = list(request.overrides)
    return absolute_paths(build_config(apply_overrides(raw, overrides),
                                       f"student config ({request.config or teacher.path})",
                                       overrides))


def _unlabelled_rows(sources: list[Path], data_root: Path, folder: Path
                     ) -> pd.DataFrame:
    """The teacher's probabilities of every eval image, written as ``extra.csv`` rows (their
    argmax the hard label, as pseudo-labels are) and returned keyed by their path."""
    info = read_eval(data_root)
    tables = [prediction_table(info["ImageID"], open_predictor(s).predict(data_root,
                                                                          info["path"]))
              for s in sources]
    table = mean_table(tables, [str(s) for s in sources])
    predictions = folder / EVAL_PREDICTIONS
    write_csv(table, predictions)
    extra = pseudo_label(predictions, data_root, 1.0 / labels.NUM_CLASSES, folder)
    return prediction_table(extra["path"], table[CLASS_COLUMNS].to_numpy())


def distill(request: DistillRequest, interactive: bool | None = None) -> RunResult:
    """Write the teacher's soft targets, then train the student as a new run."""
    runs = request.check()
    data_root = request.data_root(runs[0])
    cfg = student_config(request, runs[0])
    preflight(cfg)  # the student can be built here before the teacher predicts
    tables = [teacher_predictions(Path(s), data_root) for s in request.sources]
    teacher = mean_table(tables, [str(s) for s in request.sources])
    records, _ = prepare_records(cfg, data_root)  # every image the student trains on
    teacher_probs(teacher.set_index("ImageID"), records["path"], ", ".join(
        str(s) for s in request.sources))
    name = request.name or f"{request.student}-distilled"
    folder = RunDir.create(request.runs_dir, f"{name}-teacher").path
    raw = config_to_dict(cfg)
    if request.unlabelled:
        teacher = pd.concat([teacher, _unlabelled_rows(list(request.sources), data_root,
                                                       folder)], ignore_index=True)
        raw["data"]["extra"] = [*raw["data"]["extra"], str(folder.resolve())]
    write_csv(teacher, folder / TEACHER_FILE)
    write_json(folder / SOURCES_FILE, {"sources": [str(Path(s).resolve())
                                                   for s in request.sources],
                                       "images": len(teacher),
                                       "unlabelled": request.unlabelled})
    raw["distill"]["teacher"] = str((folder / TEACHER_FILE).resolve())
    cfg = build_config(raw, f"student of {', '.join(map(str, request.sources))}")
    log.info("teacher: %d images' soft targets in %s; student %s, alpha %.2f, "
             "temperature %.2f", len(teacher), folder, request.student, cfg.distill.alpha,
             cfg.distill.temperature)
    parent = {"distilled_from": {"sources": [str(Path(s).resolve()) for s in request.sources],
                                 "teacher": str(folder.resolve())}}
    return execute(plan_new(cfg, data_root, request.runs_dir, name, parent=parent),
                   interactive)
