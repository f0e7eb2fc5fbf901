"""A study folder of ``maskclf auto`` (``auto/NAME/``): its file names, the identity a
continued study must keep, its plan (written once, by whichever worker gets there first)
and its Optuna study."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import optuna

from maskclf.auto.plan import NETWORK_LOAD_S, StudyPlan, epoch_images, plan_study
from maskclf.auto.preset import Preset
from maskclf.config import RunConfig
from maskclf.errors import UsageError, first_line
from maskclf.runs.directory import RunDir

log = logging.getLogger(__name__)
HEARTBEAT_S = 20
"""Optuna heartbeat: a trial whose worker died is failed after ``3 x`` this, and redone."""


class StudyFolder:
    """The files of ``auto/NAME/``; runs live in ``runs/``."""

    PLAN = "plan.json"
    CLOCK = "clock.json"
    RUNS = "runs"
    SUMMARY = "summary.json"
    REPORT = "report.md"
    PROGRESS = "progress.png"
    SUBMISSION = RunDir.SUBMISSION
    PREDICTIONS = RunDir.PREDICTIONS

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    def run(self, unit_id: str) -> Path:
        return self.path / self.RUNS / unit_id

    @property
    def finished(self) -> bool:
        return self.file(self.SUMMARY).is_file()


def plan_identity(data: Path, budget_s: float, preset_text: str,
                  external: list[Path] | None = None) -> dict:
    """What a study was started with; the same command must give the same (the outside
    sources only when there are some, so studies begun before they existed continue)."""
    identity = {"data": str(data.resolve()), "budget_s": budget_s,
                "preset_sha256": hashlib.sha256(preset_text.encode()).hexdigest()}
    if external:
        identity["external"] = [str(path) for path in external]
    return identity


def check_identity(folder: StudyFolder, identity: dict) -> None:
    """A study continued with another data folder, budget or preset is refused (before
    its clock restarts)."""
    path = folder.file(StudyFolder.PLAN)
    if not path.is_file():
        return
    record = json.loads(path.read_text())
    for key in dict.fromkeys([*identity, "external"]):
        value = identity.get(key)
        if record.get(key) != value:
            raise UsageError(f"{folder.path} was started with another "
                             f"{key.removesuffix('_sha256').removesuffix('_s')} "
                             f"({record.get(key)}, now {value}); run the command it began "
                             "with, or give a new --name")


def open_plan(folder: StudyFolder, identity: dict, preset: Preset,
              configs: dict[str, RunConfig], data: Path, n_train: int, n_val: int,
              n_eval: int, left_s: float) -> StudyPlan:
    """The study's plan: read, or measured on ``data`` and written by the first worker (an
    exclusive create, so concurrent workers all follow the one written)."""
    path = folder.file(StudyFolder.PLAN)
    if not path.is_file():
        from maskclf.auto.probe import probe_speed  # torch: only to measure

        speeds = {}
        for name, cfg in configs.items():
            try:
                speeds[name] = probe_speed(cfg, data)
            except Exception as exc:  # no weights offline, no such device: the others go on
                log.warning("auto: candidate %s cannot run on this machine and is left out: "
                            "%s", name, first_line(exc))
                continue
            log.info("speed probe: %s %.1f ms an image to train, %.1f to predict", name,
                     1e3 * speeds[name].train_s, 1e3 * speeds[name].predict_s)
        if not speeds:
            raise UsageError(f"no candidate of the preset can run on this machine "
                             f"({', '.join(configs)}); see the warnings above")
        epoch_s = {name: s.epoch_s(epoch_images(configs[name], n_train), n_val)
                   for name, s in speeds.items()}
        network_predict_s = NETWORK_LOAD_S + n_eval * max(
            s.predict_s for s in speeds.values())
        plan = plan_study(left_s, preset, list(speeds), epoch_s, network_predict_s)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**identity, "plan": plan.to_dict()}, indent=2))
        try:
            os.link(tmp, path)  # fails when another worker's plan is already there
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return StudyPlan.from_dict(json.loads(path.read_text())["plan"])


def open_study(folder: StudyFolder, storage: str | None) -> optuna.Study:
    from maskclf.train.tune import open_storage

    return optuna.create_study(study_name=folder.path.name, direction="maximize",
                               storage=open_storage(storage, folder.path, HEARTBEAT_S),
                               load_if_exists=True)
