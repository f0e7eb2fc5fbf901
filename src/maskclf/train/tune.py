"""Optuna studies over maskclf configs: search spaces, trials as ordinary runs, reports.

A search space is a YAML file mapping config keys to distributions::

    optim.lr: {log_float: [1.0e-4, 3.0e-3]}
    loss.name: {choice: [cross_entropy, focal]}
    loss.gamma: {float: [1.0, 3.0], when: {loss.name: focal}}   # only for focal trials
    data.image_size: {choice: [[128, 96], [192, 144]]}
    train.batch_size: {int: [16, 64], step: 16}

Every trial is a run directory under ``OUT/runs/trial-<number>`` (so ``maskclf runs``,
``report`` and ``predict`` work on it); its objective is the run's validation macro F1 (the
pooled out-of-fold F1 of a k-fold trial). Poor trials are pruned after an epoch by a median
pruner through optuna-integration's Lightning callback. The study lives in a storage: by
default a SQLite file in ``OUT``; a PostgreSQL URL lets any number of workers on any number
of machines share it.
"""

from __future__ import annotations

import builtins
import json
import logging
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import sqlalchemy
import torch
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from maskclf.atomic import atomic_write, atomic_write_text, write_csv
from maskclf.config import (
    ConfigError,
    apply_overrides,
    build_config,
    check_keys,
    config_to_dict,
)
from maskclf.errors import MaskclfError, MissingFileError, RunInterrupted, UsageError
from maskclf.metrics import VAL_F1
from maskclf.tables import require_file
from maskclf.train.request import TuneRequest

log = logging.getLogger(__name__)

KINDS = ("float", "log_float", "int", "log_int", "choice")


class Distribution(BaseModel):
    """One key of a search space: exactly one kind, an optional step, an optional condition."""

    model_config = ConfigDict(extra="forbid")

    # the kinds are named as users write them; builtins.* because ``float`` and ``int`` are
    # field names inside this class
    float: tuple[builtins.float, builtins.float] | None = None
    log_float: tuple[builtins.float, builtins.float] | None = None
    int: tuple[builtins.int, builtins.int] | None = None
    log_int: tuple[builtins.int, builtins.int] | None = None
    choice: list[Any] | None = None
    step: builtins.float | None = None
    when: dict[str, Any] = {}
    """Sample this key only in trials where each named key took the given value."""

    @model_validator(mode="after")
    def _one_kind(self) -> Distribution:
        given = [kind for kind in KINDS if getattr(self, kind) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(KINDS)}; got {given or 'none'}")
        if self.choice is not None:
            if not self.choice:
                raise ValueError("choice needs at least one value")
            if self.step is not None:
                raise ValueError("step applies to ranges, not to choice")
            texts = [json.dumps(value, sort_keys=True) for value in self.choice]
            if len(set(texts)) != len(texts):
                raise ValueError(f"choice lists a value twice: {self.choice}")
            return self
        low, high = getattr(self, self.kind)
        if not low <= high:
            raise ValueError(f"{self.kind}: the range [{low}, {high}] is reversed (low > high)")
        if self.kind.startswith("log_") and low <= 0:
            raise ValueError(f"{self.kind}: a log scale needs a positive low end; got {low}")
        if self.step is not None:
            if self.kind.startswith("log_"):
                raise ValueError(f"{self.kind}: a log scale takes no step (Optuna samples it "
                                 "continuously)")
            if self.step <= 0 or (high > low and self.step > high - low):
                raise ValueError(f"step {self.step} must be positive and no larger than the "
                                 f"range [{low}, {high}]")
            if self.kind == "int" and self.step != round(self.step):
                raise ValueError(f"int: step {self.step} must be a whole number")
        return self

    @property
    def kind(self) -> str:
        return next(kind for kind in KINDS if getattr(self, kind) is not None)

    def values_to_check(self) -> list[Any]:
        """Every choice, or both ends of the range: the values checked against the config
        before any trial runs."""
        return list(self.choice) if self.choice is not None else list(getattr(self, self.kind))

    def suggest(self, trial: optuna.Trial, key: str) -> Any:
        if self.choice is not None:  # Optuna stores categories as plain values: lists as JSON
            return json.loads(trial.suggest_categorical(key, [json.dumps(v) for v in self.choice]))
        low, high = getattr(self, self.kind)
        log_scale = self.kind.startswith("log_")
        if self.kind.endswith("int"):
            return trial.suggest_int(key, low, high, step=int(self.step or 1), log=log_scale)
        return trial.suggest_float(key, low, high, step=self.step, log=log_scale)


def load_space(path: Path | str, base: dict[str, Any]) -> dict[str, Distribution]:
    """Read and check a search space: every key exists in the config and takes its values."""
    path = require_file(path, "search space")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:  # syntax errors and tags (!!python/...) alike
        raise ConfigError(f"search space {path} is not plain YAML: "
                          f"{' '.join(str(exc).split())}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"search space {path} is not UTF-8 text: {exc}") from None
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"search space {path} must map config keys to distributions, e.g. "
                          "optim.lr: {log_float: [1.0e-4, 3.0e-3]}")
    space = {}
    for key, entry in raw.items():
        if not isinstance(key, str) or not key.strip():
            raise ConfigError(f"search space {path}: key {key!r} is not a config key such as "
                              "optim.lr")
        try:
            space[key] = Distribution.model_validate(entry)
        except ValidationError as exc:
            reason = "; ".join(
                f"unknown field {e['loc'][-1]!r}: give one of {', '.join(KINDS)} (with "
                "optional step and when)" if e["type"] == "extra_forbidden"
                else e["msg"].removeprefix("Value error, ") for e in exc.errors())
            raise ConfigError(f"search space {path}: {key}: {reason}") from None
        for value in space[key].values_to_check():
            try:
                check_keys(apply_overrides(base, [f"{key}={json.dumps(value)}"]),
                           f"{path} ({key}={json.dumps(value)})")
            except ConfigError as exc:
                raise ConfigError(f"search space {path}: {key} does not fit the config:\n"
                                  f"{exc}") from None
    for key, distribution in space.items():
        _check_condition(path, key, distribution, space)
    return space


def _check_condition(path: Path, key: str, distribution: Distribution,
                     space: dict[str, Distribution]) -> None:
    """``when`` names keys of the space, with values those keys can take."""
    unknown = set(distribution.when) - set(space)
    if unknown:
        raise ConfigError(f"search space {path}: {key}: 'when' names {sorted(unknown)}, "
                          "which the space does not sample")
    for other, value in distribution.when.items():
        choices = space[other].choice
        if choices is not None and value not in choices:
            raise ConfigError(f"search space {path}: {key}: 'when' needs {other}={value!r}, "
                              f"which {other} never takes (its choices: {choices})")


def sample(trial: optuna.Trial, space: dict[str, Distribution]) -> dict[str, Any]:
    """The trial's values: each key in file order, conditional keys only when they apply."""
    values: dict[str, Any] = {}
    for key, distribution in space.items():
        if all(values.get(name) == wanted for name, wanted in distribution.when.items()):
            values[key] = distribution.suggest(trial, key)
    return values


DATABASE = "study.db"
"""A study's SQLite file in its folder when no storage URL is given (tune and auto)."""
SCHEMA_ATTEMPTS, SCHEMA_WAIT_S = 5, 1.0
"""Tries to open a storage whose tables another worker is creating, and the wait between."""


def open_storage(url: str | None, out: Path, heartbeat_s: int | None = None
                 ) -> optuna.storages.RDBStorage:
    """The study's storage: ``url``, or a SQLite file in ``out``. With ``heartbeat_s`` a
    trial whose worker stopped beating for three heartbeats is failed by the next worker
    that looks (``optuna.storages.fail_stale_trials``), so its work is done again."""
    if url is None:
        out.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{(out / DATABASE).resolve()}"
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for attempt in range(SCHEMA_ATTEMPTS):
        try:
            with warnings.catch_warnings():  # Optuna marks the heartbeat experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine, heartbeat_interval=heartbeat_s,
                    grace_period=None if heartbeat_s is None else 3 * heartbeat_s)
        except RunInterrupted:  # a stop while it connects is a stop, not a storage problem
            raise
        except Exception as exc:  # a driver or server problem: say which storage
            if _lost_schema_race(exc) and attempt + 1 < SCHEMA_ATTEMPTS:
                log.info("study storage: another worker is creating its tables; again in "
                         "%.1fs", SCHEMA_WAIT_S)
                time.sleep(SCHEMA_WAIT_S)
                continue
            raise UsageError(f"cannot open the study storage {url.split('@')[-1]}: "
                             f"{type(exc).__name__}: {exc}") from None
    raise AssertionError("unreachable")


def _lost_schema_race(exc: Exception) -> bool:
    """Two workers that open a new database at once both create Optuna's tables; on
    PostgreSQL ``CREATE ... IF NOT EXISTS`` is not atomic, so one fails with a unique
    violation (``pg_type_typname_nsp_index``) or "already exists". The tables are there
    for it a moment later."""
    return (isinstance(exc, sqlalchemy.exc.IntegrityError | sqlalchemy.exc.ProgrammingError)
            and ("already exists" in str(exc) or "duplicate key" in str(exc)))


def run_study(cfg_raw: dict[str, Any], data_root: Path | str, space_path: Path | str,
              trials: int, study_name: str, out: Path | str, storage: str | None = None,
              timeout_s: float | None = None, sampler_seed: int | None = None,
              startup_trials: int = 5, warmup_epochs: int = 1) -> dict:
    """Run ``trials`` trials of a study (joined if it exists) and return its state.

    ``cfg_raw`` is the base config as a dict (YAML plus overrides). Workers that share a
    study should each get their own ``sampler_seed``.
    """
    from optuna_integration import PyTorchLightningPruningCallback

    from maskclf.train.execute import train_run

    out = Path(out)
    base = build_config(cfg_raw, "base config")
    if not base.data.validates:
        raise UsageError("a study scores validation macro F1: set data.val_ratio > 0 or "
                         "data.folds >= 2")
    space = load_space(space_path, cfg_raw)
    study = optuna.create_study(
        study_name=study_name, storage=open_storage(storage, out), direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=base.seed if sampler_seed is None
                                           else sampler_seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=startup_trials,
                                           n_warmup_steps=warmup_epochs),
        load_if_exists=True)

    def objective(trial: optuna.Trial) -> float:
        values = sample(trial, space)
        try:
            cfg = build_config(apply_overrides(cfg_raw, [f"{k}={json.dumps(v)}"
                                                          for k, v in values.items()]),
                               f"trial {trial.number}")
            trial.set_user_attr("config", config_to_dict(cfg))
            result = train_run(cfg, data_root, out / "runs", f"trial-{trial.number:04d}",
                               interactive=False,
                               callbacks=[PyTorchLightningPruningCallback(trial, VAL_F1)])
        except RunInterrupted as exc:  # Ctrl+C / SIGTERM: Optuna marks the trial failed, stops
            raise KeyboardInterrupt from exc
        except MaskclfError as exc:  # an invalid combination: the trial fails, the study goes on
            trial.set_user_attr("error", str(exc))
            raise
        trial.set_user_attr("run", str(result.run))
        return result.summary["validation"]["macro_f1"]

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*already reported.*")  # k-fold: fold 0 prunes
        study.optimize(objective, n_trials=trials, timeout=timeout_s, catch=(MaskclfError,))
    return study_state(study)


def trial_values(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """A trial's config values as the space wrote them (choices are stored as JSON)."""
    return {key: json.loads(value) if isinstance(trial.distributions[key],
                                                 optuna.distributions.CategoricalDistribution)
            else value for key, value in trial.params.items()}


def study_state(study: optuna.Study) -> dict:
    """Counts of trials by state and the best trial so far."""
    states = pd.Series([t.state.name for t in study.trials]).value_counts().to_dict()
    state = {"study": study.study_name, "trials": len(study.trials), "states": states,
             "best": None}
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        state["best"] = {"number": best.number, "value": best.value, "params": trial_values(best),
                         "run": best.user_attrs.get("run")}
    return state


def _figure(draw, path: Path) -> Path | None:
    """Save one of Optuna's matplotlib plots; None when the study cannot draw it yet."""
    import matplotlib.pyplot as plt  # Optuna draws through pyplot; figures are closed here

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
        try:
            axes = draw()
        except (ValueError, RuntimeError) as exc:
            log.info("skipped %s: %s", path.name, exc)
            return None
    figure = axes.ravel()[0].figure if hasattr(axes, "ravel") else axes.figure
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100))
    plt.close(figure)
    return path


def study_report(study_name: str, out: Path | str, storage: str | None = None,
                 report_dir: Path | str | None = None) -> dict:
    """The best trial's config (``best.yaml``, ready for ``maskclf train --config``), a
    table of trials, and Optuna's history, importance and intermediate-value plots."""
    from optuna import visualization

    out = Path(out)
    try:
        study = optuna.load_study(study_name=study_name, storage=open_storage(storage, out))
    except KeyError:
        raise MissingFileError(f"no study {study_name!r} in this storage; start it with "
                               "maskclf tune --config ... --space ...") from None
    state = study_state(study)
    if state["best"] is None:
        raise UsageError(f"study {study_name!r} has no finished trial yet ({state['states']})")
    folder = Path(report_dir or out / "report")
    folder.mkdir(parents=True, exist_ok=True)
    best = study.best_trial
    atomic_write_text(folder / "best.yaml",
                      yaml.safe_dump(best.user_attrs["config"], sort_keys=False))
    table = study.trials_dataframe(attrs=("number", "value", "state", "params", "duration",
                                          "user_attrs"))
    table = table.drop(columns=[c for c in table.columns if c == "user_attrs_config"])
    write_csv(table, folder / "trials.csv")
    plots = {"history": visualization.matplotlib.plot_optimization_history,
             "importances": visualization.matplotlib.plot_param_importances,
             "intermediate": visualization.matplotlib.plot_intermediate_values}
    figures = {name: _figure(lambda draw=draw: draw(study), folder / f"{name}.png")
               for name, draw in plots.items()}
    return {**state, "config": str(folder / "best.yaml"), "trials_table": str(folder /
                                                                              "trials.csv"),
            "figures": {k: str(v) for k, v in figures.items() if v is not None}}


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's per-trial lines would repeat what maskclf's log says (auto, ablate); its
    verbosity is back as it was after."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def set_threads(threads: int | None) -> None:
    """Workers sharing a machine split its cores (two trainings on 2 cores with default
    threads each ran ~13x slower per epoch than one alone)."""
    if threads is not None:
        torch.set_num_threads(threads)



def tune_study(request: TuneRequest) -> dict:
    """``maskclf tune``: the request checked, this worker's threads, then :func:`run_study`
    on the base config; Ctrl+C stops the study resumably."""
    request.check()
    set_threads(request.threads)
    try:
        return run_study(request.raw_config(), request.data, request.space, request.trials,
                         request.study, request.folder, request.storage, request.timeout_s,
                         request.sampler_seed, request.startup_trials, request.warmup_epochs)
    except KeyboardInterrupt:
        raise RunInterrupted(f"study {request.study!r} stopped; the running trial is marked "
                             "failed and the same command continues the study", 2) from None
