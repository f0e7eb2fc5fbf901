"""``finish``, the last unit of an ``auto`` study: choose the ensemble on the members'
out-of-fold rows, tune its decisions (only when that helps on held-out persons), predict
the eval set with every chosen member and write the validated submission, the summary and
the report."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import optuna

from maskclf import labels
from maskclf.auto.folder import StudyFolder
from maskclf.auto.report import write_report
from maskclf.auto.schedule import Work, fold_runs
from maskclf.auto.selection import Selection, blend, select
from maskclf.data.layout import read_eval
from maskclf.errors import UsageError
from maskclf.intervals import summary_intervals
from maskclf.labels import CLASS_COLUMNS
from maskclf.metrics import known_truth
from maskclf.results.decisions import apply_biases, tune_biases
from maskclf.results.ensemble import align, soft_vote
from maskclf.results.submission import oof_persons, write_predictions_and_submission
from maskclf.runs.directory import RunDir

log = logging.getLogger(__name__)


def member_trials(work: Work) -> list[optuna.trial.FrozenTrial]:
    """The pool the ensemble is chosen from, all scored on the same rows: the finished
    k-fold runs, or, when none finished, each candidate's furthest finished rung."""
    complete = [t for t in work.done().values() if t.state == optuna.trial.TrialState.COMPLETE
                and t.user_attrs.get("stage") in ("screening", "kfold")]
    kfold = [t for t in complete if t.user_attrs["stage"] == "kfold"]
    if kfold:
        return sorted(kfold, key=lambda t: t.number)
    furthest: dict[str, optuna.trial.FrozenTrial] = {}
    for trial in sorted(complete, key=lambda t: t.number):
        furthest[trial.user_attrs["candidate"]] = trial  # later rungs come later
    return list(furthest.values())


def finalists(trials: list[optuna.trial.FrozenTrial]) -> list[int]:
    """The members of the final stage among ``trials``: all k-fold runs, or the runs of the
    furthest rung reached."""
    rungs = [t.user_attrs.get("rung", 0) if t.user_attrs["stage"] == "screening" else 1_000
             for t in trials]
    return [i for i, rung in enumerate(rungs) if rung == max(rungs)]


def finish(work: Work) -> float:
    """Selection, decisions, submission, report; returns the ensemble's OOF macro F1."""
    started = time.monotonic()
    trials = member_trials(work)
    if not trials:
        raise UsageError(f"no candidate finished a run within the budget in {work.folder.path}"
                         "; give a larger --budget (a new --name starts afresh)")
    runs = [Path(t.user_attrs["run"]) for t in trials]
    names = [t.user_attrs["unit"] for t in trials]
    oofs = align([RunDir(r).require_oof("the ensemble") for r in runs],
                 [str(RunDir(r).file(RunDir.OOF)) for r in runs])
    truth, persons = labels.truth_codes(oofs[0]), oof_persons(oofs[0]).to_numpy()
    probs = [oof[CLASS_COLUMNS].to_numpy() for oof in oofs]
    classes, _, full = known_truth(truth)  # a label made unknown does not choose weights
    selection = select([p[full] for p in probs], classes[full], persons[full],
                       work.preset.ensemble_rounds, finalists(trials))
    log.info("auto: %s: %s, OOF macro F1 %.4f (best member %s %.4f); on held-out persons %s",
             selection.way, _weights_text(names, selection), selection.ensemble_f1,
             names[selection.best_member], selection.best_member_f1,
             ", ".join(f"{w} {f1:.4f}" for w, f1 in selection.check["held_out"].items()))
    ensemble_oof = blend(probs, selection.weights)
    decisions, biases = tune_biases(ensemble_oof, truth, persons)
    predicting, refit = refit_members(work, trials, runs, selection.weights)
    written = predict_eval(work, predicting, selection.weights, biases)
    members = [{"unit": n, "run": str(r), "weight": float(w), "oof_macro_f1": float(f1)}
               for n, r, w, f1 in zip(names, runs, selection.weights,
                                      [t.value for t in trials], strict=True)]
    summary = {
        "ensemble_oof_f1": selection.ensemble_f1,
        "ensemble_oof_interval": summary_intervals(truth, ensemble_oof.argmax(axis=1), persons),
        "best_member_oof_f1": selection.best_member_f1,
        "members": members,
        "selection": {"way": selection.way, "used_ensemble": selection.used_ensemble,
                      "check": selection.check,
                      "path": [{**step, "added": names[step["added"]]}
                               for step in selection.path]},
        "decisions": {**decisions, "biases": [float(b) for b in biases]},
        "screening": work.screening,
        "refit": refit,
        **written,
        "finish_s": round(time.monotonic() - started, 1),
    }
    write_report(work, summary)
    return selection.ensemble_f1


def refit_members(work: Work, trials: list[optuna.trial.FrozenTrial], runs: list[Path],
                  weights: np.ndarray) -> tuple[list[Path], dict]:
    """With the preset's ``refit``: each chosen member retrained on every person
    (``train.plan.plan_refit``, its folds' median best epoch) when the time left, less the
    eval prediction's reserve, fits them all at their own pace (one fold's seconds, scaled
    to every person); the runs to predict with, and a record of what was done or why not."""
    if not work.preset.refit:
        return runs, {"used": False, "reason": "the preset does not ask for a refit"}
    chosen = [i for i, w in enumerate(weights) if w > 0]
    folds = work.plan.folds
    need = {i: trials[i].user_attrs["seconds"] / fold_runs(trials[i].user_attrs)
            * folds / (folds - 1) for i in chosen}
    left = work.clock.left() - work.plan.reserve_s
    if sum(need.values()) > left:
        return runs, {"used": False, "reason": f"the refits need about "
                      f"{sum(need.values()):.0f}s; {max(0.0, left):.0f}s are left"}
    from maskclf.train.execute import execute, resume_run
    from maskclf.train.plan import plan_refit

    refits = list(runs)
    for i in chosen:
        path = work.folder.run(f"refit-{trials[i].user_attrs['unit']}")
        if RunDir(path).finished:
            pass
        elif path.exists():
            resume_run(path, work.data, interactive=False)
        else:
            share = max(1, int(left * need[i] / sum(need.values())))
            execute(plan_refit(runs[i], work.data, path.name,
                               train={"time_limit": f"{share}s"}), interactive=False)
        refits[i] = path
    return refits, {"used": True, "runs": [str(refits[i]) for i in chosen],
                    "planned_s": round(sum(need.values()), 1)}


def _weights_text(names: list[str], selection: Selection) -> str:
    return ", ".join(f"{n} {w:.2f}" for n, w in zip(names, selection.weights, strict=True)
                     if w > 0)


def predict_eval(work: Work, runs: list[Path], weights: np.ndarray, biases: np.ndarray
                 ) -> dict:
    """The eval set predicted by every member with a weight, averaged with the weights,
    decided with the biases; the submission is validated against info.csv before any
    file is written."""
    from maskclf.predict.workflows import predict_run

    info = read_eval(work.data)
    voters = [(predict_run(run, work.data, tune_decisions=False, vote=False).predictions,
               weight) for run, weight in zip(runs, weights, strict=True) if weight > 0]
    mean = soft_vote([path for path, _ in voters], [weight for _, weight in voters])
    probs = mean.set_index("ImageID").loc[info["ImageID"], CLASS_COLUMNS].to_numpy()
    folder = work.folder
    predictions, submission = (folder.file(StudyFolder.PREDICTIONS),
                               folder.file(StudyFolder.SUBMISSION))
    write_predictions_and_submission(predictions, submission, info, probs,
                                     apply_biases(probs, biases))
    return {"submission": str(submission), "predictions": str(predictions),
            "n_eval": len(info)}

