"""Inference on a run: load its networks from their checkpoints, predict images, write
predictions and the validated submission. Nothing here trains."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from maskclf import labels
from maskclf.atomic import write_csv, write_csv_set
from maskclf.data.io import collect_images, read_rgb
from maskclf.data.layout import read_eval
from maskclf.data.loaders import make_dataset
from maskclf.decisions import apply_biases, load_biases
from maskclf.errors import UsageError
from maskclf.inference import predict_embeddings, predict_probs
from maskclf.metrics import score
from maskclf.models.factory import load_net
from maskclf.models.heads import combine_attribute_probs
from maskclf.models.spec import ModelSpec, resolve_specs
from maskclf.persons import check_vote, group_persons, person_vote, verdict
from maskclf.plots import image_grid
from maskclf.rundir import RunDir
from maskclf.submission import (
    CLASS_COLUMNS,
    PredictResult,
    checked_submission,
    oof_persons,
    prediction_table,
    read_prediction_file,
)
from maskclf.tta import check_views

log = logging.getLogger(__name__)


def _predict_network(checkpoint: Path, root: Path, paths, tta: list[str],
                     cache: bool = True) -> np.ndarray:
    """One checkpoint's probabilities; its own spec says how to read the images (through
    the decode-once cache unless ``cache`` is False, e.g. for a user's own folder)."""
    model = load_net(checkpoint)
    cfg = model.spec.cfg
    if not cache:
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"cache": "none"})})
    return predict_probs(model, make_dataset(cfg, root, paths, None, train=False), tta)


def predict_fold(run: RunDir, specs: list[ModelSpec], root: Path, paths, fold: int,
                 tta: list[str], cache: bool = True) -> tuple[np.ndarray, list[Path]]:
    """N x 18 probabilities of one fold: its network, or its attribute networks combined."""
    parts, used = {}, []
    for spec in specs:
        checkpoint = run.fold(spec, fold).checkpoint()
        parts[spec.task] = _predict_network(checkpoint, root, paths, tta, cache)
        used.append(checkpoint)
    probs = parts[specs[0].task] if len(specs) == 1 else combine_attribute_probs(parts)
    return probs, used


def predict_paths(run: RunDir, specs: list[ModelSpec], root: Path, paths, tta: list[str],
                  cache: bool = True) -> tuple[np.ndarray, list[Path]]:
    """N x 18 probabilities for images ``paths``: the mean over the run's fold models."""
    folds = run.trained_folds(specs[0])
    total, used = None, []
    for fold in folds:
        probs, checkpoints = predict_fold(run, specs, root, paths, fold, tta, cache)
        total = probs if total is None else total + probs
        used += checkpoints
    return total / len(folds), used


def _embeddings(run: RunDir, spec: ModelSpec, fold: int, root: Path, paths) -> np.ndarray:
    model = load_net(run.fold(spec, fold).checkpoint())
    return predict_embeddings(model, make_dataset(model.spec.cfg, root, paths, None, train=False))


def _voting_spec(specs: list[ModelSpec]) -> ModelSpec:
    """The network whose features group persons: the age network of a per-attribute run
    (gender and age are what the vote decides), else the run's one network."""
    return next((spec for spec in specs if spec.task == "age"), specs[0])


def vote_on_persons(run: RunDir, specs: list[ModelSpec], root: Path, paths,
                    probs: np.ndarray) -> tuple[np.ndarray, dict]:
    """The person vote on eval ``probs`` when it proves itself on the run's out-of-fold rows
    (each fold's rows embedded by that fold's network), else ``probs`` unchanged; and a
    record of the check, whether the vote was applied and why not."""
    settings, spec = specs[0].cfg.predict, _voting_spec(specs)
    if not run.file(RunDir.OOF).exists():
        return probs, {"applied": False, "reason": f"{run.path} has no {RunDir.OOF} (a refit "
                       "run): the vote cannot be checked against known persons"}
    oof = read_prediction_file(run.file(RunDir.OOF))
    embeddings = np.concatenate([_embeddings(run, spec, int(fold), root, rows["ImageID"])
                                 for fold, rows in oof.groupby("fold", sort=True)])
    oof = oof.sort_values("fold", kind="stable")
    check = check_vote(embeddings, oof[CLASS_COLUMNS].to_numpy(), oof["class"].to_numpy(),
                       oof_persons(oof).to_numpy(),
                       oof["fold"].to_numpy(), settings.person_size)
    reason = verdict(check, settings.person_min_purity)
    record = {"check": check.to_dict(), "applied": reason is None, "reason": reason}
    if reason is not None:
        log.warning("person vote not applied: %s", reason)
        return probs, record
    first_fold = run.trained_folds(spec)[0]
    groups = group_persons(_embeddings(run, spec, first_fold, root, paths), settings.person_size)
    log.info("person vote applied: out-of-fold purity %.3f, macro F1 %+.4f",
             check.purity, check.f1_change)
    return person_vote(probs, groups), record


def _open(run_path: Path | str, tta: list[str] | None, allow_unfinished: bool = False
          ) -> tuple[RunDir, list[ModelSpec], list[str]]:
    """The run, its networks' specs and the TTA views (``tta`` replaces ``predict.tta``).

    An unfinished run (interrupted, or still training) is refused unless allowed: its
    checkpoints may come from a fold that stopped part-way.
    """
    run = RunDir.open(run_path)
    if not (run.finished or allow_unfinished):
        raise UsageError(f"{run.path} has not finished ({RunDir.SUMMARY} is missing): finish "
                         f"it with `maskclf train --resume {run.path}`, or pass "
                         "--allow-unfinished to predict with the checkpoints it has")
    cfg = run.read_config()
    return run, resolve_specs(cfg), cfg.predict.tta if tta is None else check_views(tta)


def predict_run(run_path: Path | str, data_root: Path | str | None = None,
                tta: list[str] | None = None, tune_decisions: bool | None = None,
                allow_unfinished: bool = False, vote: bool | None = None) -> PredictResult:
    """Predict ``eval/images`` in ``info.csv`` order, averaging the run's fold models.

    Writes ``predictions.csv`` and a validated ``submission.csv`` into the run directory;
    with ``predict.tune_decisions`` (or ``tune_decisions=True``) the run's decision biases
    choose the submitted class. ``tta`` replaces the config's ``predict.tta``; ``vote``
    (default ``predict.person_vote``) asks for the person vote, applied before the biases.
    """
    run, specs, views = _open(run_path, tta, allow_unfinished)
    tune = specs[0].cfg.predict.tune_decisions if tune_decisions is None else tune_decisions
    biases = load_biases(run.path, views) if tune else None  # before any work: fail fast
    data_root = run.data_root(data_root)
    info = read_eval(data_root)
    probs, checkpoints = predict_paths(run, specs, data_root, info["path"], views)
    voted = None
    if specs[0].cfg.predict.person_vote if vote is None else vote:
        probs, voted = vote_on_persons(run, specs, data_root, info["path"], probs)
    decided = probs.argmax(axis=1) if biases is None else apply_biases(probs, biases)
    predictions, submission = run.file(RunDir.PREDICTIONS), run.file(RunDir.SUBMISSION)
    table = prediction_table(info["ImageID"], probs).assign(
        submitted=decided, decided_by="argmax" if biases is None else "decision_biases")
    write_csv_set({predictions: table,
                   submission: checked_submission(info["ImageID"], decided, info, submission)})
    return PredictResult(predictions, submission, checkpoints, len(info), voted)


def predict_oof(run_path: Path | str, data_root: Path | str | None = None,
                tta: list[str] | None = None) -> tuple[Path, dict]:
    """Recompute out-of-fold probabilities with each fold's own model (e.g. with TTA) into
    ``RUN/oof_<views>.csv`` (``RunDir.oof_name``), so files of different views never
    overwrite each other. The fold of each training image comes from ``RUN/oof.csv``;
    returns the file and scores.
    """
    run, specs, views = _open(run_path, tta)
    oof = read_prediction_file(run.file(RunDir.OOF))
    tables = []
    for fold, rows in oof.groupby("fold", sort=True):
        probs, _ = predict_fold(run, specs, run.data_root(data_root), rows["ImageID"],
                                int(fold), views)
        tables.append(prediction_table(rows["ImageID"], probs).assign(
            fold=int(fold), **{"class": rows["class"].to_numpy()}))
    table = pd.concat(tables, ignore_index=True)
    path = run.write_table(RunDir.oof_name(views), table)
    return path, score(table["class"], table[CLASS_COLUMNS].to_numpy().argmax(axis=1))


GRID_LIMIT = 60
"""Images shown in ``predict --images --grid`` (the CSV holds every image)."""


def predict_images(run_path: Path | str, sources: list[str], out: Path | str | None = None,
                   tta: list[str] | None = None, grid: Path | str | None = None) -> dict:
    """Predict any images (files, folders, globs) with the run's preprocessing, TTA and
    fold ensemble, exactly as ``eval/`` is predicted. Writes a CSV (default
    ``RUN/image_predictions.csv``): ``path``, the 18 class and the attribute probabilities,
    and the decoded ``label``, ``mask``, ``gender``, ``age``; with ``grid``, a captioned
    PNG of the first ``GRID_LIMIT`` images. The user's folders get no decode cache."""
    run, specs, views = _open(run_path, tta)
    files = collect_images(sources)
    root = Path(os.path.commonpath([f.parent for f in files]))
    relative = [str(f.relative_to(root)) for f in files]
    probs, checkpoints = predict_paths(run, specs, root, relative, views, cache=False)
    table = prediction_table([str(f) for f in files], probs).rename(columns={"ImageID": "path"})
    decided = probs.argmax(axis=1)
    mask, gender, age = labels.decode_class(decided)
    table = table.assign(label=[labels.class_names()[c] for c in decided],
                         mask=[labels.MASK_NAMES[m] for m in mask],
                         gender=[labels.GENDER_NAMES[g] for g in gender],
                         age=[labels.AGE_NAMES[a] for a in age])
    out = Path(out) if out is not None else run.file("image_predictions.csv")
    write_csv(table, out)
    result = {"predictions": str(out), "n_images": len(files),
              "checkpoints": [str(c) for c in checkpoints]}
    if grid is not None:
        shown = min(len(files), GRID_LIMIT)
        captions = [f"{table['label'][i]} ({probs[i].max():.2f})\n{files[i].name[:24]}"
                    for i in range(shown)]
        title = f"{run.name}: {shown} of {len(files)} images" if shown < len(files) else (
            f"{run.name}: {len(files)} images")
        image_grid([read_rgb(f) for f in files[:shown]], captions, title, Path(grid))
        result["grid"] = str(grid)
    return result
