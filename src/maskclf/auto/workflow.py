"""``maskclf auto --data DATA --budget 30m``: check, measure, plan, then work the study's
units until the submission is written (or, on another worker, until no unit is left)."""

from __future__ import annotations

import json
import logging
import math
import shutil
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna

from maskclf.auto.clock import BudgetClock
from maskclf.auto.folder import StudyFolder, open_plan, open_study
from maskclf.auto.plan import BudgetTooShort, StudyPlan
from maskclf.auto.request import AutoRequest, CheckedAuto
from maskclf.auto.schedule import Work
from maskclf.auto.worker import work_loop
from maskclf.config import ExternalSource
from maskclf.data.external import read_sources
from maskclf.errors import RunInterrupted, UsageError
from maskclf.ticker import duration
from maskclf.train.tune import quiet_optuna

log = logging.getLogger(__name__)


def run_auto(request: AutoRequest, started: float | None = None) -> dict:
    """Spend the request's budget on the best submission for its data; returns the summary
    (a worker that ends while another finishes the study returns its state). ``started``:
    when the command began (default: now), the budget's start."""
    checked = request.checked()
    folder = checked.folder
    if folder.finished:
        log.info("auto: %s is finished; its summary follows (a new --name starts another)",
                 folder.path)
        return {**json.loads(folder.file(StudyFolder.SUMMARY).read_text()),
                "already_finished": True}
    from maskclf.train.tune import set_threads

    set_threads(request.threads)
    # a refusal before the plan leaves nothing behind: the folders this command made
    made = [p for p in (folder.path.parent, folder.path) if not p.exists()]
    with _sigterm_stops(), quiet_optuna():
        study = _open_study(request, folder)
        if not folder.file(StudyFolder.PLAN).is_file():  # nothing planned yet: a fresh budget
            folder.file(StudyFolder.CLOCK).unlink(missing_ok=True)
        clock = BudgetClock(folder, checked.budget_s, started)
        try:
            _work(Path(request.data), checked, study, clock)
        except BudgetTooShort as exc:
            if folder.path in made:
                _remove_study(request, folder, made)
            spent = checked.budget_s - clock.left()
            raise UsageError(f"--budget {request.budget} cannot train one candidate for one "
                             f"epoch here: the data check, caches and speed probe took "
                             f"{spent:.0f}s, then {exc.needs}; give at least --budget "
                             f"{math.ceil(spent + exc.least_s)}s") from None
        except (KeyboardInterrupt, RunInterrupted) as exc:
            clock.pause()  # the budget does not run while no command works on it
            raise RunInterrupted(f"stopped by {_signal_name(exc)} with "
                                 f"{duration(max(0.0, clock.left()))} of the budget left; the "
                                 f"same command continues: {request.command()}",
                                 _signum(exc)) from None
        except BaseException:
            clock.pause()
            raise
    if folder.finished:
        return json.loads(folder.file(StudyFolder.SUMMARY).read_text())
    return {"study": str(folder.path), "finished": False,
            "note": "no unit left for this worker; another worker is finishing the study"}


def _open_study(request: AutoRequest, folder: StudyFolder) -> optuna.Study:
    """The study, opened before anything of it is written: a shared storage (``--storage``)
    before the study folder exists, the default SQLite file in the folder it creates. A
    stop while it opens leaves at most that folder, which the same command starts again."""
    try:
        if request.storage is None:
            folder.path.mkdir(parents=True, exist_ok=True)
        study = open_study(folder, request.storage)
    except (KeyboardInterrupt, RunInterrupted) as exc:
        raise RunInterrupted(f"stopped by {_signal_name(exc)} while opening the study "
                             f"storage, before its budget started; the same command starts it: "
                             f"{request.command()}", _signum(exc)) from None
    folder.path.mkdir(parents=True, exist_ok=True)
    return study


def _signum(exc: BaseException) -> int:
    return exc.signum if isinstance(exc, RunInterrupted) else signal.SIGINT


def _signal_name(exc: BaseException) -> str:
    return signal.Signals(_signum(exc)).name


def _work(data: Path, checked: CheckedAuto, study: optuna.Study, clock: BudgetClock) -> None:
    """Check the data, build the caches, read or make the plan, then work the units."""
    settings, configs, _ = checked.loaded
    folder = checked.folder
    records, info = checked.tables
    outside = (list(read_sources([ExternalSource(path=p) for p in checked.outside])["path"])
               if checked.outside else [])
    _build_caches(data, configs, [*records["path"], *info["path"]], outside)
    n_val = math.ceil(len(records) / settings.folds)
    plan = open_plan(folder, checked.identity, settings, configs, data, len(records) - n_val,
                     n_val, len(info), clock.left())
    _log_plan(plan, settings.final_epochs_cap)
    work = Work(study, plan, settings, configs, folder, data, clock)
    from maskclf.auto.finish import finish

    work_loop(work, finish)


def _remove_study(request: AutoRequest, folder: StudyFolder, made: list[Path]) -> None:
    """Undo a fresh study: the folders made for it (SQLite, clock) and, on a shared
    storage, its record."""
    if request.storage is not None:
        optuna.delete_study(study_name=folder.path.name, storage=request.storage)
    shutil.rmtree(made[0], ignore_errors=True)


@contextmanager
def _sigterm_stops() -> Iterator[None]:
    """SIGTERM between trainings (building caches, choosing, predicting) stops the study
    as it does during training, where Lightning's own handler is installed (and this one
    then leaves the signal to it), instead of killing the process with the budget running."""
    import threading

    def stop(signum, frame) -> None:
        if signal.getsignal(signal.SIGTERM) is stop:
            raise RunInterrupted("stopped by SIGTERM", signal.SIGTERM)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _build_caches(data: Path, configs: dict, paths: list[str], outside: list[str]) -> None:
    """Every candidate's decode-once cache (train and eval images, and the ``outside``
    sources' for a candidate that trains on them) before the plan is timed: candidates with
    the same preprocessing share one."""
    from maskclf.data.cache import build_cache, open_cache, settings_key

    built = set()
    for cfg in configs.values():
        images = [*paths, *outside] if cfg.data.external else paths
        key = (settings_key(cfg.data), len(images))
        if key not in built and open_cache(data, cfg.data, len(images)) is not None:
            build_cache(data, cfg.data, images)
        built.add(key)


def _log_plan(plan: StudyPlan, most_epochs: int) -> None:
    """The plan in one line: what is screened, what the members are, what is kept."""
    if len(plan.rungs) > 1:
        screening = "successive halving on fold 0: " + ", then ".join(
            f"{r.count} x {r.epochs} epochs" for r in plan.rungs[:-1 if not plan.kfold_epochs
                                                                 else None])
    else:
        screening = "no screening (the budget fits no more candidates than members)"
    final = (f"{plan.survivors} x {plan.folds}-fold runs" if plan.kfold_epochs
             else f"{plan.rungs[-1].count} x fold 0")
    expected = plan.kfold_epochs or plan.rungs[-1].epochs
    log.info("auto plan for %s: %d candidates (%s); %s; members: %s, %d epochs expected to "
             "fit (up to %d when time is left); %s kept to choose the ensemble and predict",
             duration(plan.budget_s), len(plan.candidates), ", ".join(plan.candidates),
             screening, final, expected, most_epochs, duration(plan.reserve_s))
