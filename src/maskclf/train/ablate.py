"""``maskclf ablate``: every combination of the varied settings trained with several seeds on
the same validation persons, and each setting's effect with its interval.

The runs are the units of one Optuna study (so several workers, a PostgreSQL storage and
resume work as for ``tune``): each unit is enqueued as a trial with its ``unit`` parameter,
a worker pops the next waiting one, an interrupted unit's trial fails and the next command
enqueues it again and resumes its run directory. A unit the config's rules refuse ends as a
pruned trial with the reason, and the study goes on.

The effects rest on two sources of noise at once. Each draw resamples the validation
persons (the same persons for every run: the differences are paired) and, for each value,
its seeds (with replacement); a value's figure on a draw is the mean over those seeds, and
its difference from the setting's first value is taken draw by draw. A value is called
better or worse only when the 95 % interval of that difference leaves zero.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd

from maskclf import labels
from maskclf.atomic import write_csv, write_json
from maskclf.config import RunConfig, absolute_paths, apply_overrides, build_config, dump_config
from maskclf.errors import ConfigError, MaskclfError, RunInterrupted, UsageError
from maskclf.intervals import METRICS, Interval, PersonBootstrap, percentile_interval
from maskclf.reports.plots import forest_figure
from maskclf.results.ensemble import classes_of
from maskclf.results.submission import oof_persons
from maskclf.runs.directory import RunDir
from maskclf.tables import markdown_table
from maskclf.train.request import AblateRequest
from maskclf.train.tune import open_storage, quiet_optuna, set_threads

log = logging.getLogger(__name__)
RUNS = "runs"
"""The study folder's runs: ``runs/<study>-c<combination>-r<repeat>``."""
HEARTBEAT_S = 60
"""A worker that stops beating for three heartbeats has its unit failed and done again."""
WAITING, RUNNING = optuna.trial.TrialState.WAITING, optuna.trial.TrialState.RUNNING
TAKEN = (WAITING, RUNNING, optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
"""Units in these states need no new trial; a FAIL (an interrupted unit) is enqueued again."""


def _text(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


@dataclass(frozen=True)
class Grid:
    """The combinations of the varied values, each trained ``repeats`` times."""

    base: dict
    varied: dict[str, list]
    repeats: int

    @property
    def combinations(self) -> list[dict[str, Any]]:
        keys = list(self.varied)
        return [dict(zip(keys, values, strict=True))
                for values in itertools.product(*self.varied.values())]

    def unit_id(self, combination: int, repeat: int) -> str:
        return f"c{combination:02d}-r{repeat}"

    @staticmethod
    def parts(unit: str) -> tuple[int, int]:
        """A unit's combination and repeat (``c03-r1``: 3 and 1)."""
        combination, repeat = (int(part[1:]) for part in unit.split("-"))
        return combination, repeat

    @property
    def seed(self) -> int:
        """The base config's seed: repeat r trains with ``seed + r``."""
        return build_config(self.base, "base config").seed

    @property
    def units(self) -> list[str]:
        return [self.unit_id(c, r) for c in range(len(self.combinations))
                for r in range(self.repeats)]

    def config(self, unit: str) -> RunConfig:
        """The unit's config: its combination, seed ``base seed + repeat``, and the base's
        person split for every unit."""
        combination, repeat = self.parts(unit)
        base = build_config(self.base, "base config")
        values = self.combinations[combination]
        return build_config(apply_overrides(self.base, [
            *(f"{key}={_text(value)}" for key, value in values.items()),
            f"seed={base.seed + repeat}", f"data.split_seed={base.split_seed}"]),
            f"ablation unit {unit} ({describe(values) or 'the base config'})")

    def identity(self) -> str:
        """What a continued study must be asked again: the base, the values, the repeats."""
        return _text({"base": self.base, "varied": self.varied, "repeats": self.repeats})


def describe(values: dict[str, Any]) -> str:
    return ", ".join(f"{key}={_text(value)}" for key, value in values.items())


def refused_combinations(grid: Grid) -> dict[int, str]:
    """Combinations the config's rules refuse (split BatchNorm without outside data, say),
    by index with the reason: left out before anything is written; all refused is a usage
    error."""
    refused = {}
    for combination in range(len(grid.combinations)):
        try:
            grid.config(grid.unit_id(combination, 0))
        except ConfigError as exc:
            refused[combination] = " ".join(str(exc).split())
    if len(refused) == len(grid.combinations):
        raise UsageError(f"every combination is refused by the config's rules; the first: "
                         f"{next(iter(refused.values()))}")
    return refused


def _open_study(request: AblateRequest, grid: Grid) -> optuna.Study:
    study = optuna.create_study(study_name=request.study, direction="maximize",
                                storage=open_storage(request.storage, request.folder,
                                                     HEARTBEAT_S), load_if_exists=True)
    begun = study.user_attrs.get("grid")
    if begun is None:
        study.set_user_attr("grid", grid.identity())
    elif begun != grid.identity():
        raise UsageError(f"study {request.study!r} was begun with another config, --vary or "
                         "--repeats; give those again, or a new --study / --out")
    return study


def _enqueue_open_units(study: optuna.Study, units: list[str]) -> None:
    taken = {t.params.get("unit", t.system_attrs.get("fixed_params", {}).get("unit"))
             for t in study.get_trials(deepcopy=False, states=TAKEN)}
    for unit in units:
        if unit not in taken:
            study.enqueue_trial({"unit": unit})


def trained_twin(runs: Path, cfg: RunConfig, data: Path) -> Path | None:
    """A finished run in the folder that trained exactly this config (seed included) on
    this data — another study's unit, say the reference arm of a second ablation — reused
    instead of trained again."""
    wanted = dump_config(absolute_paths(cfg))
    for summary in sorted(runs.glob(f"*/{RunDir.SUMMARY}")):
        run = RunDir(summary.parent)
        if (run.file(RunDir.CONFIG).read_text() == wanted
                and run.read_record().get("data") == str(Path(data).resolve())):
            return run.path
    return None


def run_units(request: AblateRequest, grid: Grid, units: list[str]) -> optuna.Study:
    """Do ``units`` until none is waiting (other workers may still be running theirs)."""
    from maskclf.train.execute import finish_existing, train_run

    study = _open_study(request, grid)

    def objective(trial: optuna.Trial) -> float:
        unit = trial.suggest_categorical("unit", grid.units)
        path = request.folder / RUNS / f"{request.study}-{unit}"
        try:
            summary = finish_existing(path, request.data)
            if summary is None:
                cfg = grid.config(unit)
                twin = trained_twin(path.parent, cfg, request.data)
                if twin is not None:
                    log.info("ablate: %s is %s's config, seed and data: reused", unit, twin)
                    path, summary = twin, RunDir(twin).read_summary()
                else:
                    summary = train_run(cfg, request.data, path.parent, path.name,
                                        interactive=False).summary
        except RunInterrupted as exc:  # the trial fails; the same command resumes it
            raise KeyboardInterrupt from exc
        except MaskclfError as exc:  # this unit cannot train: left out, the study goes on
            trial.set_user_attr("error", str(exc))
            log.warning("ablate: %s left out: %s", unit, exc)
            raise optuna.TrialPruned(str(exc)) from None
        trial.set_user_attr("run", str(path))
        return float(summary["validation"]["macro_f1"])

    while True:
        with warnings.catch_warnings():  # Optuna marks the heartbeat experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        _enqueue_open_units(study, units)
        if not study.get_trials(deepcopy=False, states=(WAITING,)):
            return study
        study.optimize(objective, n_trials=1)


@dataclass(frozen=True)
class RunDraws:
    """A finished unit's figures: on all persons (``point``, metrics) and on each draw
    (``draws``, metrics x draws)."""

    point: np.ndarray
    draws: np.ndarray


def score_units(runs: dict[str, Path], draws: int) -> tuple[dict[str, RunDraws], dict]:
    """Every finished unit scored on the same person draws (the images all of them
    validated on)."""
    tables = {unit: RunDir(path).require_oof("ablate") for unit, path in runs.items()}
    shared = None
    for table in tables.values():
        ids = pd.Index(table["ImageID"].astype(str))
        shared = ids if shared is None else shared.intersection(ids)
    if shared is None or shared.empty:
        raise UsageError("the ablation's runs share no validation image")
    shared = shared.sort_values()
    first = next(iter(tables.values())).set_index("ImageID").loc[shared]
    boot = PersonBootstrap(labels.truth_codes(first), oof_persons(first.reset_index()),
                           draws=draws)
    predicted = [pd.Series(classes_of(t), index=t["ImageID"].astype(str)).loc[shared]
                 .to_numpy() for t in tables.values()]
    result = boot.compare(predicted)
    scored = {unit: RunDraws(result.point_of(i), result.draws_of(i))
              for i, unit in enumerate(tables)}
    return scored, {"images": len(shared), "persons": boot.n_persons, "draws": draws,
                    "level": boot.level}


def _seed_means(runs: Sequence[RunDraws], rng: np.random.Generator) -> np.ndarray:
    """Draws x metrics: on each draw, the mean over that many seeds drawn with replacement
    (one seed: its own draws)."""
    stacked = np.stack([run.draws.T for run in runs], axis=1)  # draws x seeds x metrics
    chosen = rng.integers(0, len(runs), size=stacked.shape[:2])
    return np.take_along_axis(stacked, chosen[..., None], axis=1).mean(axis=1)


def effects(grid: Grid, scored: dict[str, RunDraws], level: float, seed: int = 0
            ) -> pd.DataFrame:
    """One row per setting, value and metric: the value's mean over its runs with an
    interval, and its paired difference from the setting's first value (the mean over the
    other settings' combinations) with an interval and a verdict. Without varied settings,
    one row per metric: the config's seed-to-seed mean and interval."""
    rng = np.random.default_rng(seed)
    combinations = grid.combinations
    by_combination = []
    for c in range(len(combinations)):
        runs = [scored[u] for r in range(grid.repeats) if (u := grid.unit_id(c, r)) in scored]
        by_combination.append(None if not runs else (
            np.mean([run.point for run in runs], axis=0), _seed_means(runs, rng), len(runs)))
    settings = grid.varied or {"config": [None]}
    rows = []
    for key, values in settings.items():
        marginals = []
        for value in values:
            members = [by_combination[c] for c, combo in enumerate(combinations)
                       if by_combination[c] is not None and (not grid.varied
                                                             or combo[key] == value)]
            marginals.append(None if not members else (
                np.mean([m[0] for m in members], axis=0),
                np.mean([m[1] for m in members], axis=0), sum(m[2] for m in members)))
        reference = marginals[0]
        for value, marginal in zip(values, marginals, strict=True):
            if marginal is None:
                continue
            point, draws, runs = marginal
            for m, metric in enumerate(METRICS):
                own = percentile_interval(point[m], draws[:, m], level)
                row = {"setting": key, "value": "(base)" if value is None else _text(value),
                       "runs": runs, "metric": metric, "mean": own.value, "low": own.low,
                       "high": own.high, "difference": None, "difference_low": None,
                       "difference_high": None, "verdict": None}
                if reference is not None and marginal is not reference:
                    difference = percentile_interval(point[m] - reference[0][m],
                                           draws[:, m] - reference[1][:, m], level)
                    row.update(difference=difference.value, difference_low=difference.low,
                               difference_high=difference.high, verdict=difference.verdict)
                rows.append(row)
    return pd.DataFrame(rows)


def effects_frame(result: dict) -> pd.DataFrame:
    """The effects as ``ablate`` prints and reports them: one row per setting, value and
    metric."""
    rows = []
    for r in result["effects"]:
        difference = "" if r["difference"] is None else Interval(
            r["difference"], r["difference_low"], r["difference_high"]).text(signed=True)
        rows.append({"setting": r["setting"], "value": _short(r["value"], 40), "runs": r["runs"],
                     "metric": r["metric"],
                     "mean [CI]": Interval(r["mean"], r["low"], r["high"]).text(),
                     "vs first [CI]": difference, "verdict": r["verdict"] or ""})
    return pd.DataFrame(rows)


def seed_table(grid: Grid, scored: dict[str, RunDraws], runs: dict[str, Path]
               ) -> pd.DataFrame:
    """Every finished run's own figures: the seed-to-seed spread in plain view."""
    rows = []
    for c, values in enumerate(grid.combinations):
        for r in range(grid.repeats):
            unit = grid.unit_id(c, r)
            if unit in scored:
                rows.append({"unit": unit, "combination": describe(values) or "(base)",
                             "seed": grid.seed + r, "run": str(runs[unit]),
                             **dict(zip(METRICS, scored[unit].point.round(4), strict=True))})
    return pd.DataFrame(rows)


def _short(label: str, most: int = 72) -> str:
    """A value or label as shown: absolute paths of folders as their name (``data.external``
    values), of files as their folder and name (``data.corrections``: every suspects folder
    holds a corrections.yaml); effects.csv and ablation.json keep them whole."""
    def short_path(path: Path) -> str:
        return f"{path.parent.name}/{path.name}" if path.suffix and path.parent.name else (
            path.name)

    label = re.sub(r'"(/[^"]*)"', lambda m: short_path(Path(m[1])), label)
    label = label.replace('"', "").replace("path: ", "")
    return label if len(label) <= most else label[:most - 1] + "…"


def _plot(table: pd.DataFrame, info: dict, path: Path) -> Path | None:
    """The differences from each setting's first value as a forest plot."""
    compared = table.dropna(subset=["difference"])
    if compared.empty:
        return None
    rows = []
    for (setting, value), group in compared.groupby(["setting", "value"], sort=False):
        by_metric = group.set_index("metric")
        rows.append((_short(f"{setting}={value}"), {
            m: {"value": by_metric.loc[m, "difference"], "low": by_metric.loc[m,
                                                                              "difference_low"],
                "high": by_metric.loc[m, "difference_high"]} for m in METRICS},
                     by_metric["verdict"].to_dict()))
    return forest_figure(rows, METRICS, f"effects against each setting's first value: "
                         f"{info['level']:.0%} intervals over {info['persons']} persons and "
                         "the seeds", "difference", path)


def _markdown(table: pd.DataFrame, seeds: pd.DataFrame, info: dict, refused: dict) -> str:
    lines = ["# Ablation", "", f"{info['runs']} runs on {info['images']} validation images of "
             f"{info['persons']} persons; {info['level']:.0%} intervals over persons and "
             f"seeds ({info['draws']} draws).", ""]
    frame = effects_frame({"effects": json.loads(table.to_json(orient="records"))})
    lines += markdown_table(list(frame.columns), frame.itertuples(index=False))
    lines += ["", "## Each run", "", *markdown_table(list(seeds.columns),
                                                     seeds.itertuples(index=False))]
    if refused:
        lines += ["", "## Left out by the config's rules", "",
                  *(f"- {combo}: {why}" for combo, why in refused.items())]
    return "\n".join(lines) + "\n"


def ablate(request: AblateRequest) -> dict:
    """``maskclf ablate``: check, train the units this worker gets, then write the
    effects of every unit finished so far into ``OUT/STUDY/`` (``effects.csv``,
    ``effects.md``, ``effects.png``, ``runs.csv``, ``ablation.json``)."""
    from maskclf.atomic import atomic_write_text

    varied = request.check()
    grid = Grid(request.raw_config(), varied, request.repeats)
    refused = refused_combinations(grid)
    units = [u for u in grid.units if grid.parts(u)[0] not in refused]
    set_threads(request.threads)
    try:
        with quiet_optuna():
            study = run_units(request, grid, units)
    except KeyboardInterrupt:
        raise RunInterrupted("ablation stopped; the running unit's trial is marked failed "
                             "and the same command resumes it", 2) from None
    finished = {t.params["unit"]: Path(t.user_attrs["run"]) for t in study.get_trials(
        deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))}
    left_out = {t.params.get("unit"): t.user_attrs.get("error") for t in study.get_trials(
        deepcopy=False, states=(optuna.trial.TrialState.PRUNED,))}
    if not finished:
        raise UsageError("no unit of the ablation finished; see the log for why")
    scored, info = score_units(finished, request.draws)
    info["runs"] = len(scored)
    table, seeds = effects(grid, scored, info["level"]), seed_table(grid, scored, finished)
    out = request.folder / request.study  # studies sharing a folder share its runs only
    out.mkdir(parents=True, exist_ok=True)
    files = {"effects": out / "effects.csv", "runs": out / "runs.csv",
             "markdown": out / "effects.md", "plot": out / "effects.png"}
    write_csv(table, files["effects"])
    write_csv(seeds, files["runs"])
    named = {describe(grid.combinations[c]) or "(base)": why for c, why in refused.items()}
    atomic_write_text(files["markdown"], _markdown(table, seeds, info, named))
    if _plot(table, info, files["plot"]) is None:
        del files["plot"]
    result = {"study": request.study, "folder": str(out), **info,
              "varied": varied, "repeats": request.repeats,
              "refused": named,
              "left_out": left_out,
              "unfinished": [u for u in units if u not in finished and u not in left_out],
              "effects": json.loads(table.to_json(orient="records")),
              "files": {k: str(v) for k, v in files.items()}}
    write_json(out / "ablation.json", result)
    return result
