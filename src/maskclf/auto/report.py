"""``summary.json``, ``report.md`` and ``progress.png`` of an ``auto`` study: the plan, every
candidate with its time and score, the selection path and weights, the time per stage
(planned and spent), and the best validation F1 against the budget's wall time."""

from __future__ import annotations

from collections import defaultdict

import optuna
from matplotlib.figure import Figure

from maskclf.atomic import atomic_write_text, write_json
from maskclf.auto.folder import StudyFolder
from maskclf.auto.plan import StudyPlan, ladder_seconds
from maskclf.auto.schedule import Work
from maskclf.intervals import Interval
from maskclf.reports.plots import save
from maskclf.tables import markdown_table
from maskclf.ticker import duration

MEMBERS = "members (fold 0)"


def candidate_rows(work: Work) -> list[dict]:
    """Every unit's trial: what it trained, how long, how well, or why it did not."""
    rows = []
    for trial in sorted(work.trials(), key=lambda t: t.number):
        attrs = trial.user_attrs
        if not attrs.get("stage") or attrs["stage"] == "finish":
            continue
        state = trial.state.name.lower()
        if trial.state == optuna.trial.TrialState.PRUNED:
            state = f"skipped ({attrs.get('skipped') or attrs.get('error', '')})"
        rows.append({"unit": attrs["unit"], "candidate": attrs["candidate"],
                     "stage": stage_name(attrs["stage"], attrs.get("rung"), work.plan),
                     "epochs": attrs.get("epochs"),
                     "seconds": attrs.get("seconds"), "val_macro_f1": trial.value,
                     "state": state, "at_s": attrs.get("at_s")})
    return rows


def stage_name(stage: str, rung: int | None = None, plan: StudyPlan | None = None) -> str:
    """The one name every table gives a stage: ``start``, ``screening, rung R``, ``members
    (fold 0)`` (the last rung of a ``plan`` without k-fold: it trains the members, and with
    one rung nothing is screened), ``k-fold``, ``finish``."""
    if stage == "kfold":
        return "k-fold"
    if stage != "screening" or rung is None:
        return stage
    if plan is not None and not plan.kfold_epochs and rung == len(plan.rungs) - 1:
        return MEMBERS
    return f"screening, rung {rung}"


def planned_seconds(plan: StudyPlan) -> dict[str, float]:
    """The plan's seconds per stage, by the names of :func:`stage_name` (the members' rung
    apart from screening when it trains the members)."""
    planned = {stage_name(k): v for k, v in plan.stage_s.items()}
    if not plan.kfold_epochs:
        costs = [plan.epoch_s[name] for name in plan.candidates]
        screening = round(ladder_seconds(plan.rungs[:-1], costs), 1)
        planned[MEMBERS] = round(planned.pop("screening") - screening, 1)
        if screening:
            planned["screening"] = screening
    return planned


def write_report(work: Work, result: dict) -> dict:
    """The whole summary (the budget's figures measured now, last) and the report."""
    folder, plan = work.folder, work.plan
    rows = candidate_rows(work)
    spent: dict[str, float] = defaultdict(float)
    spent["start"] = work.clock.budget_s - plan.budget_s  # checks, caches, speed probe
    for row in rows:
        spent[row["stage"].split(",")[0]] += row["seconds"] or 0.0
    spent["finish"] = result["finish_s"]
    progress = _progress_figure(rows, result, work.clock.elapsed(), work.clock.budget_s,
                                folder)
    summary = {"budget_s": work.clock.budget_s, "elapsed_s": None, "budget_held": None,
               "plan": plan.to_dict(), "candidates": rows, **result,
               "stages": {"planned_s": planned_seconds(plan),
                          "spent_s": {k: round(v, 1) for k, v in spent.items()}},
               "report": str(folder.file(StudyFolder.REPORT)), "progress": str(progress)}
    elapsed = work.clock.elapsed()
    slowest_epoch = work.pace().seconds(max(plan.epoch_s.values()), 1)
    summary["elapsed_s"] = round(elapsed, 1)
    budget_s = work.clock.budget_s
    summary["budget_held"] = elapsed <= budget_s + max(0.05 * budget_s, slowest_epoch)
    atomic_write_text(folder.file(StudyFolder.REPORT), _markdown(folder, summary))
    write_json(folder.file(StudyFolder.SUMMARY), summary)
    return summary


def _progress_figure(rows: list[dict], result: dict, elapsed: float, budget_s: float,
                     folder: StudyFolder):
    """Best validation macro F1 so far against the minutes of budget spent (each unit
    when it finished), the ensemble's OOF F1 at the end, and the budget."""
    done = sorted((r for r in rows if r["val_macro_f1"] is not None and r["at_s"]),
                  key=lambda r: r["at_s"])
    times, best, high = [], [], 0.0
    for row in done:
        high = max(high, row["val_macro_f1"])
        times.append(row["at_s"] / 60)
        best.append(high)
    figure = Figure(figsize=(6, 3.5))
    ax = figure.subplots()
    ax.step(times, best, where="post", marker="o", markersize=3,
            label="best single run so far (validation)")
    ax.axvline(budget_s / 60, color="0.5", linestyle="--", label="budget")
    ax.set_xlim(0, budget_s / 60 * 1.03)
    ax.scatter([elapsed / 60], [result["ensemble_oof_f1"]], color="tab:red", zorder=3,
               label="chosen ensemble (OOF)")
    ax.set(xlabel="budget spent (minutes)", ylabel="macro F1",
           title="best macro F1 against wall time")
    ax.legend(loc="lower right", fontsize=8)
    return save(figure, folder.file(StudyFolder.PROGRESS))


def _table(rows: list[dict], columns: list[str]) -> list[str]:
    def cell(value) -> str:
        if isinstance(value, list):
            return "/".join(map(str, value))
        if isinstance(value, float):
            return f"{value:.4f}" if value <= 1 else f"{value:.1f}"
        return "" if value is None else str(value)

    return markdown_table(columns, [[cell(row.get(c)) for c in columns] for row in rows])


def _interval_text(interval: dict | None, signed: bool = False) -> str:
    """An interval dict as ``+0.012 [-0.010, +0.035]``; empty when there is none."""
    return "" if interval is None else Interval(**interval).text(signed)


def _screening_lines(screening: dict) -> list[str]:
    """Who went on from each rung, and why the others did not: their gap to the best."""
    lines = []
    for rung, decided in screening.items():
        gaps = "; ".join(f"{name} {_interval_text(gap, signed=True)}"
                         for name, gap in decided["gap_to_best"].items()) or "none"
        lines += [f"Screening {rung}: {', '.join(decided['went_on'])} went on (the preset's "
                  "earlier candidates while the best does not beat them beyond noise). Gap to "
                  f"the best, 95% interval over persons: {gaps}.", ""]
    return lines


def _selection_path(members: list[dict], path: list[dict]) -> list[str]:
    """The greedy path, when there is more than one member to choose among."""
    if len(members) < 2:
        return ["One member: nothing to select among.", ""]
    return ["Greedy selection with replacement (Caruana et al., 2004) over the members' "
            "out-of-fold predictions (macro F1 against ensemble size; the best step is kept):",
            "", *_table(path, ["size", "added", "macro_f1"]), ""]


def _markdown(folder: StudyFolder, summary: dict) -> str:
    plan = summary["plan"]
    study_plan = StudyPlan.from_dict(plan)
    rungs = [{"stage": stage_name("screening", i, study_plan), "candidates": r["count"],
              "epochs": r["epochs"], "folds": "fold 0"} for i, r in enumerate(plan["rungs"])]
    if plan["kfold_epochs"]:
        rungs.append({"stage": stage_name("kfold"),
                      "candidates": study_plan.survivors,
                      "epochs": plan["kfold_epochs"], "folds": plan["folds"]})
    members = [m for m in summary["members"] if m["weight"] > 0]
    stages = [{"stage": k, "planned_s": summary["stages"]["planned_s"].get(k),
               "spent_s": v} for k, v in summary["stages"]["spent_s"].items()]
    selection = summary["selection"]
    gains = selection["check"].get("gain_over_best_member", {})
    ways = [{"way": way, "all rows": f1, "held-out persons": selection["check"][
        "held_out"].get(way), "held-out gain over the best member [95% CI]":
        _interval_text(gains.get(way), signed=True)}
        for way, f1 in selection["check"]["fitted"].items()]
    decisions = summary["decisions"]
    interval = summary.get("ensemble_oof_interval")
    spread = ("" if interval is None else f" [{interval['macro_f1']['low']:.4f}, "
              f"{interval['macro_f1']['high']:.4f}], 95% over {interval['persons']} persons")
    lines = [
        f"# maskclf auto: {folder.path.name}", "",
        f"Budget {duration(summary['budget_s'])}, spent {duration(summary['elapsed_s'])} "
        f"({'held' if summary['budget_held'] else 'overrun'}). Ensemble OOF macro F1 "
        f"**{summary['ensemble_oof_f1']:.4f}**{spread} (best member "
        f"{summary['best_member_oof_f1']:.4f}). Submission: `{summary['submission']}`.", "",
        "## Plan", "", *_table(rungs, ["stage", "candidates", "epochs", "folds"]),
        "",
        "Estimated epoch seconds (speed probe): " + ", ".join(
            f"{n} {s:.0f}s" for n, s in plan["epoch_s"].items()), "",
        "## Candidates", "",
        *_table(summary["candidates"], ["unit", "candidate", "stage", "epochs", "seconds",
                                        "val_macro_f1", "state"]), "",
        *_screening_lines(summary.get("screening") or {}),
        "## Selection", "",
        *_selection_path(summary["members"], selection["path"]),
        f"Macro F1 of each way to combine them, on all rows and on held-out persons "
        f"({selection['check']['splits']} person-grouped splits; fitted on the others):", "",
        *_table(ways, ["way", "all rows", "held-out persons",
                       "held-out gain over the best member [95% CI]"]), "",
        f"Used: **{selection['way']}** (the best member unless a blend's held-out gain over "
        "it is beyond noise — its 95% interval over persons above zero — and the blend "
        "scores at least as well on all rows).", "",
        *_table(members, ["unit", "weight", "oof_macro_f1", "run"]), "",
        f"Decision tuning (held-out persons): {decisions['plain_macro_f1']:.4f} plain, "
        f"{decisions['tuned_macro_f1']:.4f} tuned, gain "
        f"{_interval_text(decisions.get('gain'), signed=True)}: "
        + ("applied." if decisions["applied"] else "not applied (not beyond noise)."), "",
        "Refit on every person: " + (", ".join(f"`{r}`" for r in summary["refit"]["runs"])
                                     + " predicted the eval set instead of their members."
                                     if summary["refit"]["used"]
                                     else f"not done ({summary['refit']['reason']})."), "",
        "## Time per stage", "", *_table(stages, ["stage", "planned_s", "spent_s"]), "",
        f"Spent {summary['elapsed_s'] / summary['budget_s']:.0%} of the budget; "
        f"{duration(max(0.0, summary['budget_s'] - summary['elapsed_s']))} left unspent. "
        "The start is the data check, the decode-once caches and the speed probe. The "
        "members' runs are re-planned from the pace measured when they start (their "
        "epochs above), so time that dropped candidates or fast runs freed goes to them.", "",
        f"![best macro F1 against wall time]({StudyFolder.PROGRESS})", "",
    ]
    return "\n".join(lines)
