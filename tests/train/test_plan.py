"""Run plans: refits and continuations planned like any run, their parents recorded."""

import numpy as np
import pandas as pd
import pytest

from maskclf.errors import UsageError
from maskclf.predict.workflows import predict_run
from maskclf.results.submission import oof_persons
from maskclf.runs.directory import RunDir
from maskclf.train.execute import train_run
from tests.conftest import tiny_config


@pytest.mark.slow
def test_a_refit_is_planned_like_any_run_and_records_its_parent(synthetic_root, tmp_path):
    import json

    from maskclf.train.execute import train
    from maskclf.train.plan import plan
    from maskclf.train.request import TrainRequest
    from tests.conftest import TINY_OVERRIDES

    request = TrainRequest(overrides=(*TINY_OVERRIDES, "data.folds=2"), data=synthetic_root,
                           runs_dir=tmp_path, name="cv")
    parent = train(request, interactive=False)
    oof = pd.read_csv(parent.run / RunDir.OOF, dtype={"person": str})
    assert (oof["person"] == oof_persons(oof.drop(columns="person"))).all()
    planned = plan(TrainRequest(refit=parent.run))
    assert planned.cfg.data.folds == 0 and planned.name == "cv-refit"
    assert planned.record["refit_of"]["run"] == str(parent.run.resolve())
    assert not (tmp_path / "cv-refit").exists()  # a plan writes nothing
    refit = train(TrainRequest(refit=parent.run), interactive=False)
    record = json.loads((refit.run / RunDir.RECORD).read_text())
    assert refit.run.name == "cv-refit"
    assert record["refit_of"]["run"] == str(parent.run.resolve())
    assert record["refit_of"]["best_epochs"] and refit.summary["validation"] is None
    with pytest.raises(UsageError, match="--refit trains the run's own config"):
        plan(TrainRequest(refit=parent.run, fold=0))


@pytest.mark.slow
def test_a_finished_run_trains_longer_as_a_new_run_that_keeps_its_history(synthetic_root,
                                                                          tmp_path):
    import json

    import pandas as pd

    from maskclf.models.weights import safe_torch_load
    from maskclf.train.execute import continue_run
    from maskclf.train.module import lr_multiplier

    parent = train_run(tiny_config("train.epochs=2"), synthetic_root, tmp_path, "short",
                       interactive=False).run
    before = pd.read_csv(parent / "fold0" / "metrics.csv")
    longer = continue_run(parent, 4, interactive=False)
    assert longer.run.name == "short-more"
    after = pd.read_csv(longer.run / "fold0" / "metrics.csv")
    epochs = after.dropna(subset=["val/f1"])["epoch"].tolist()
    assert epochs == [0, 1, 2, 3]  # the parent's epochs, then the new ones
    pd.testing.assert_frame_equal(after.dropna(subset=["val/f1"]).head(2).reset_index(drop=True),
                                  before.dropna(subset=["val/f1"]).reset_index(drop=True),
                                  check_like=True)
    assert pd.read_csv(parent / "fold0" / "metrics.csv").equals(before)  # parent untouched
    record = json.loads((longer.run / "run.json").read_text())
    assert record["continued_from"] == {"run": str(parent.resolve()), "epochs": 2}
    last = safe_torch_load(longer.run / "fold0" / "checkpoints" / "last.ckpt")
    assert last["epoch"] == 3
    state = next(v for k, v in last["callbacks"].items() if k.startswith("ModelCheckpoint"))
    f1 = after.dropna(subset=["val/f1"])["val/f1"]
    assert float(state["best_model_score"]) == pytest.approx(f1.max(), abs=1e-6)
    assert state["best_model_path"].startswith(str(longer.run))
    lr = after.dropna(subset=["lr-AdamW/pg1"])["lr-AdamW/pg1"].tolist()
    cfg = tiny_config()  # the 4-epoch cosine (4 steps an epoch) from the first new step
    assert lr[2] == pytest.approx(cfg.optim.lr * lr_multiplier(8, 16, 4, cfg.sched), rel=1e-4)
    assert lr[2] > cfg.optim.lr * lr_multiplier(7, 8, 4, cfg.sched)  # the parent's last rate
    with pytest.raises(Exception, match="already trained 4 epochs"):
        continue_run(longer.run, 3)


@pytest.mark.slow
def test_refit_trains_everyone_for_the_folds_best_epochs(synthetic_root, tmp_path):
    import torch

    from maskclf.models.weights import safe_torch_load
    from maskclf.train.plan import refit_config

    run = train_run(tiny_config("data.folds=2", "train.epochs=3"), synthetic_root, tmp_path,
                    "cv", interactive=False).run
    cfg, best_epochs, data = refit_config(run)
    chosen = [int(safe_torch_load(run / f"fold{k}/checkpoints/best.ckpt")["epoch"]) + 1
              for k in (0, 1)]
    assert best_epochs == chosen and cfg.train.epochs == round(float(np.median(chosen)))
    assert (cfg.data.folds, cfg.data.val_ratio) == (0, 0.0) and data == synthetic_root
    refit = train_run(cfg, data, tmp_path, "cv-refit", interactive=False)
    assert refit.summary["validation"] is None
    folds = pd.read_csv(refit.run / "folds.csv")
    assert len(folds) == 12 and (folds["fold"] == -1).all()  # everyone trains
    last = safe_torch_load(next((refit.run).glob("fold*/checkpoints/last.ckpt")))
    assert last["epoch"] + 1 == cfg.train.epochs and isinstance(last["state_dict"], dict)
    assert predict_run(refit.run, synthetic_root).n_images == 14
    assert torch.is_tensor(next(iter(last["state_dict"].values())))
