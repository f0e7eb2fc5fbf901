"""Prediction workflows over the engine (``run_backend.open_predictor``: a run or an export):
the eval set with its validated submission, recomputed out-of-fold rows, any images.
Nothing here trains."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from maskclf import labels
from maskclf.atomic import write_csv
from maskclf.data.io import collect_images, read_rgb, readable_images
from maskclf.data.layout import read_eval
from maskclf.errors import UsageError
from maskclf.labels import CLASS_COLUMNS
from maskclf.metrics import score_with_interval
from maskclf.predict.engine import Predictor
from maskclf.predict.run_backend import RunPredictor, open_predictor
from maskclf.reports.plots import image_grid
from maskclf.results.decisions import apply_biases, load_biases
from maskclf.results.person_vote import check_vote, group_persons, person_vote, verdict
from maskclf.results.submission import (
    PredictResult,
    oof_persons,
    oof_table,
    prediction_table,
    write_predictions_and_submission,
)
from maskclf.runs.directory import RunDir

log = logging.getLogger(__name__)


def vote_on_persons(predictor: RunPredictor, root: Path, paths,
                    probs: np.ndarray) -> tuple[np.ndarray, dict]:
    """The person vote on eval ``probs`` when it proves itself on the run's out-of-fold rows
    (each fold's rows embedded by that fold's network), else ``probs`` unchanged; and a
    record of the check, whether the vote was applied and why not."""
    run, settings = predictor.run, predictor.settings
    oof = run.read_oof()
    if oof is None:
        return probs, {"applied": False, "reason": f"{run.path} has no {RunDir.OOF} (a refit "
                       "run): the vote cannot be checked against known persons"}
    embeddings = predictor.embed_oof(root, oof["ImageID"], oof["fold"])
    check = check_vote(embeddings, oof[CLASS_COLUMNS].to_numpy(), labels.truth_codes(oof),
                       oof_persons(oof).to_numpy(),
                       oof["fold"].to_numpy(), settings.person_size)
    reason = verdict(check, settings.person_min_purity)
    record = {"check": check.to_dict(), "applied": reason is None, "reason": reason}
    if reason is not None:
        log.warning("person vote not applied: %s", reason)
        return probs, record
    groups = group_persons(predictor.embed(root, paths, predictor.folds[0]),
                           settings.person_size)
    log.info("person vote applied: out-of-fold purity %.3f, macro F1 %+.4f",
             check.purity, check.f1_change)
    return person_vote(probs, groups), record


def _run_only(predictor: Predictor, what: str) -> RunPredictor:
    if not isinstance(predictor, RunPredictor):
        raise UsageError(f"{predictor.source} is an export: {what} needs the run it came "
                         "from (its out-of-fold rows)")
    return predictor


def predict_run(run_path: Path | str, data_root: Path | str | None = None,
                tta: list[str] | None = None, tune_decisions: bool | None = None,
                allow_unfinished: bool = False, vote: bool | None = None) -> PredictResult:
    """Predict ``eval/images`` in ``info.csv`` order, averaging the run's fold models.

    Writes ``predictions.csv`` and a validated ``submission.csv`` into the run directory;
    with ``predict.tune_decisions`` (or ``tune_decisions=True``) the run's decision biases
    choose the submitted class. ``tta`` replaces the config's ``predict.tta``; ``vote``
    (default ``predict.person_vote``) asks for the person vote, applied before the biases.
    """
    predictor = open_predictor(run_path, tta, allow_unfinished)
    is_run = isinstance(predictor, RunPredictor)
    if tune_decisions is None:  # an export has neither setting
        tune_decisions = is_run and predictor.settings.tune_decisions
    if vote is None:
        vote = is_run and predictor.settings.person_vote
    biases = None  # loaded before any work: fail fast
    if tune_decisions:
        biases = load_biases(_run_only(predictor, "--tune-decisions").source, predictor.views)
    if vote:
        _run_only(predictor, "--person-vote")
    data_root = predictor.run.data_root(data_root) if is_run else Path(data_root or "data")
    info = read_eval(data_root)
    log.info("predicting %d eval images with %s", len(info), predictor.summary_line())
    probs = predictor.predict(data_root, info["path"])
    voted = None
    if vote:
        probs, voted = vote_on_persons(predictor, data_root, info["path"], probs)
    decided = probs.argmax(axis=1) if biases is None else apply_biases(probs, biases)
    folder = RunDir(predictor.source)
    predictions, submission = folder.file(RunDir.PREDICTIONS), folder.file(RunDir.SUBMISSION)
    write_predictions_and_submission(
        predictions, submission, info, probs, decided,
        decided_by="argmax" if biases is None else "decision_biases")
    return PredictResult(predictions, submission, predictor.files(), len(info), voted)


def predict_oof(run_path: Path | str, data_root: Path | str | None = None,
                tta: list[str] | None = None) -> tuple[Path, dict]:
    """Recompute out-of-fold probabilities with each fold's own model (e.g. with TTA) into
    ``RUN/oof_<views>.csv`` (``RunDir.oof_name``), so files of different views never
    overwrite each other. The fold of each training image comes from ``RUN/oof.csv``;
    returns the file and scores.
    """
    predictor = _run_only(open_predictor(run_path, tta), "maskclf oof")
    run = predictor.run
    oof = run.require_oof("maskclf oof")
    probs = predictor.predict_oof(run.data_root(data_root), oof["ImageID"], oof["fold"])
    table = oof_table(oof["ImageID"], probs, oof["fold"], oof["class"], oof_persons(oof),
                      oof.get(labels.UNKNOWN_COLUMN))
    path = run.write_table(RunDir.oof_name(predictor.views), table)
    return path, score_with_interval(labels.truth_codes(table),
                                     table[CLASS_COLUMNS].to_numpy().argmax(axis=1),
                                     table["person"])


GRID_LIMIT = 60
"""Images shown in ``predict --images --grid`` (the CSV holds every image)."""


def predict_images(run_path: Path | str, sources: list[str], out: Path | str | None = None,
                   tta: list[str] | None = None, grid: Path | str | None = None,
                   strict: bool = False) -> dict:
    """Predict any images (files, folders, globs) with the run's preprocessing, TTA and
    fold ensemble, exactly as ``eval/`` is predicted. Writes a CSV (default
    ``RUN/image_predictions.csv``): ``path``, the 18 class and the attribute probabilities,
    the decoded ``label``, ``mask``, ``gender``, ``age``, and ``skipped`` (why a file that
    does not decode was left out: its row has no probabilities; ``strict`` refuses
    instead); with ``grid``, a captioned PNG of the first ``GRID_LIMIT`` images. The
    user's folders get no decode cache."""
    predictor = open_predictor(run_path, tta)
    files, skipped = readable_images(collect_images(sources), strict)
    root = Path(os.path.commonpath([f.parent for f in files]))
    relative = [str(f.relative_to(root)) for f in files]
    probs = predictor.predict(root, relative, cache=False)
    table = prediction_table([str(f) for f in files], probs).rename(columns={"ImageID": "path"})
    decided = probs.argmax(axis=1)
    mask, gender, age = labels.decode_class(decided)
    table = table.assign(label=[labels.class_names()[c] for c in decided],
                         mask=[labels.MASK_NAMES[m] for m in mask],
                         gender=[labels.GENDER_NAMES[g] for g in gender],
                         age=[labels.AGE_NAMES[a] for a in age], skipped="")
    if skipped:
        table = pd.concat([table, pd.DataFrame({"path": [str(p) for p in skipped],
                                                "skipped": list(skipped.values())})],
                          ignore_index=True)
    out = Path(out) if out is not None else predictor.source / RunDir.IMAGE_PREDICTIONS
    write_csv(table, out)
    result = {"predictions": str(out), "n_images": len(files),
              "skipped": {str(path): reason for path, reason in skipped.items()},
              "checkpoints": [str(c) for c in predictor.files()],
              "predictor": predictor.describe()}
    if grid is not None:
        shown = min(len(files), GRID_LIMIT)
        captions = [f"{table['label'][i]} ({probs[i].max():.2f})\n{files[i].name[:24]}"
                    for i in range(shown)]
        name = predictor.source.name
        title = f"{name}: {shown} of {len(files)} images" if shown < len(files) else (
            f"{name}: {len(files)} images")
        image_grid([read_rgb(f) for f in files[:shown]], captions, title, Path(grid))
        result["grid"] = str(grid)
    return result
