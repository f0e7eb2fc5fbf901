"""Interrupt a k-fold run with a real SIGTERM part-way through a fold, resume it, and get
the same result as an uninterrupted run."""

import json
import logging
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from lightning.pytorch.callbacks import Callback

from maskclf.errors import MaskclfError, RunInterrupted
from maskclf.predict.workflows import predict_run
from maskclf.train import fold as fold_fitting
from maskclf.train.execute import resume_run, train_run
from tests.conftest import tiny_config

pytestmark = pytest.mark.slow  # trains real (tiny) models end to end

# dropout, mixup and every augmentation on: all draw random numbers a resume must replay
OVERRIDES = ("data.folds=2", "train.epochs=3", "model.drop_rate=0.2", "aug.mixup_alpha=0.4",
             "aug.shift_scale_rotate=1.0", "aug.color_jitter=1.0")


class SigtermDuring(Callback):
    """Send this process SIGTERM in the middle of ``epoch`` of the fold in ``folder``."""

    def __init__(self, folder: str, epoch: int):
        self.folder, self.epoch = folder, epoch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        in_fold = trainer.default_root_dir and self.folder in str(trainer.loggers[0].save_dir)
        if in_fold and trainer.current_epoch == self.epoch and batch_idx == 1:
            os.kill(os.getpid(), signal.SIGTERM)


def _interrupting(build_trainer):
    def build(*args, **kwargs):
        trainer, checkpoint = build_trainer(*args, **kwargs)
        trainer.callbacks.append(SigtermDuring("fold1", epoch=1))
        return trainer, checkpoint
    return build


def test_sigterm_then_resume_matches_an_uninterrupted_run(synthetic_root, tmp_path, monkeypatch,
                                                          caplog):
    caplog.set_level(logging.INFO, logger="maskclf")
    cfg = tiny_config(*OVERRIDES)
    straight = train_run(cfg, synthetic_root, tmp_path, "straight", interactive=False)

    monkeypatch.setattr(fold_fitting, "build_trainer", _interrupting(fold_fitting.build_trainer))
    with pytest.raises(RunInterrupted) as stopped:
        train_run(cfg, synthetic_root, tmp_path, "cut", interactive=False)
    assert stopped.value.signum == signal.SIGTERM  # the CLI exits 143
    run = tmp_path / "cut"
    assert "maskclf train --resume" in caplog.text
    assert (run / "fold0/result.json").is_file()  # fold 0 finished before the signal
    assert (run / "fold1/checkpoints/interrupted.ckpt").is_file()
    assert not (run / "summary.json").exists()
    monkeypatch.undo()
    with pytest.raises(MaskclfError, match="has not finished"):
        predict_run(run, synthetic_root)
    assert predict_run(run, synthetic_root, allow_unfinished=True).n_images == 14

    resumed = resume_run(run, interactive=False)
    for a, b in zip(straight.summary["folds"], resumed.summary["folds"], strict=True):
        assert a["macro_f1"] == pytest.approx(b["macro_f1"], abs=1e-6)
    oof_a, oof_b = pd.read_csv(straight.run / "oof.csv"), pd.read_csv(run / "oof.csv")
    np.testing.assert_allclose(oof_a.filter(like="class_").to_numpy(),
                               oof_b.filter(like="class_").to_numpy(), atol=1e-5)
    epochs = [pd.read_csv(r / "fold1/metrics.csv")[["epoch", "val/f1"]].dropna()
              for r in (straight.run, run)]
    pd.testing.assert_frame_equal(epochs[0].reset_index(drop=True),
                                  epochs[1].reset_index(drop=True), atol=1e-6)
    record = json.loads((run / "run.json").read_text())
    assert len(record["resumed"]) == 1 and record["interrupted_seconds"] > 0
    assert resumed.summary["seconds"] > record["interrupted_seconds"]  # both sessions count
    with pytest.raises(MaskclfError, match="already finished"):
        resume_run(run)


def test_identical_reruns(synthetic_root, tmp_path):
    cfg = tiny_config("train.epochs=2", "model.drop_rate=0.2", "aug.mixup_alpha=0.4")
    first = train_run(cfg, synthetic_root, tmp_path, "a", interactive=False)
    second = train_run(cfg, synthetic_root, tmp_path, "b", interactive=False)
    assert first.summary["validation"] == second.summary["validation"]
    other = train_run(cfg.model_copy(update={"seed": 1}), synthetic_root, tmp_path, "c",
                      interactive=False)
    oof = [pd.read_csv(r.run / "oof.csv").filter(like="class_").to_numpy()
           for r in (first, second, other)]
    np.testing.assert_array_equal(oof[0], oof[1])
    assert not np.allclose(oof[0], oof[2])


def test_ctrl_c_while_predicting_stays_an_interrupt(synthetic_root, monkeypatch):
    """Lightning turns a KeyboardInterrupt inside ``trainer.predict`` into ``exit(1)``; the
    validation predictions after a fold's training must still end as an interrupt (130)."""
    from maskclf.data.loaders import make_dataset
    from maskclf.models.factory import LoadedNet, build_net
    from maskclf.models.spec import Preprocessing, resolve_specs
    from maskclf.predict.module import InferenceModule, predict_probs

    cfg = tiny_config()
    spec = resolve_specs(cfg)[0]
    net = build_net(spec)
    model = LoadedNet(net, spec, Preprocessing.of(spec, net), None)
    dataset = make_dataset(cfg, synthetic_root, ["eval/images/" + p for p in sorted(
        p.name for p in (synthetic_root / "eval" / "images").iterdir())[:4]], None, False)

    def pressed(self, batch, batch_idx):
        raise KeyboardInterrupt

    monkeypatch.setattr(InferenceModule, "predict_step", pressed)
    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(KeyboardInterrupt):
            predict_probs(model, dataset, [])
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores SIGINT while it shuts down


@pytest.mark.slow
def test_a_run_moved_to_another_folder_still_resumes_and_predicts(synthetic_root, tmp_path,
                                                                  monkeypatch):
    import timm
    import torch

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    torch.save(timm.create_model("test_byobnet").state_dict(), "start.pth")
    run = train_run(tiny_config("model.weights=start.pth", "data.cache_dir=cache"),
                    synthetic_root, "runs", "r", interactive=False).run
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["weights"] == str(work / "start.pth")
    assert saved["data"]["cache_dir"] == str(work / "cache")
    moved = Path(shutil.move(run, tmp_path / "elsewhere"))
    monkeypatch.chdir(tmp_path / "elsewhere")
    (moved / "summary.json").unlink()  # as if it had stopped before its summary
    assert resume_run(moved, interactive=False).summary["validation"] is not None
    result = predict_run(moved)  # no data folder given: the one in run.json
    assert result.n_images == 14 and result.submission.is_file()


def test_a_run_stopped_while_writing_its_plan_is_started_anew(synthetic_root, tmp_path,
                                                               monkeypatch):
    """A stop between the plan's files (auto turns SIGTERM into an exception anywhere)
    leaves no run.json, so the folder is not taken for a run to resume (whose config or
    folds are missing) and the same unit trains anew."""
    from maskclf.runs.directory import RunDir
    from maskclf.train.execute import finish_existing

    def stopped(self, split):
        raise RunInterrupted("stopped by SIGTERM", signal.SIGTERM)

    with monkeypatch.context() as patch:
        patch.setattr(RunDir, "write_folds", stopped)
        with pytest.raises(RunInterrupted):
            train_run(tiny_config("train.epochs=1"), synthetic_root, tmp_path, "unit",
                      interactive=False)
    folder = tmp_path / "unit"
    assert (folder / "config.yaml").is_file() and not (folder / "run.json").exists()
    assert finish_existing(folder, synthetic_root) is None  # nothing to resume or keep
    assert not folder.exists()
    again = train_run(tiny_config("train.epochs=1"), synthetic_root, tmp_path, "unit",
                      interactive=False)
    assert again.run == folder and again.summary["validation"] is not None
    assert finish_existing(folder, synthetic_root) == again.summary  # finished: read back
