"""DDP on CPU (gloo, 2 processes): one run directory, disjoint shards per epoch, OOF scored
once, one decode cache, resumable interrupts — through Lightning's launcher and torchrun.

The runs start as subprocesses (inside pytest, Lightning's launcher would re-run pytest).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import TINY_OVERRIDES

pytestmark = pytest.mark.slow

ENTRY = Path(__file__).resolve().parents[1] / "helpers" / "ddp_entry.py"
TIMEOUT_S = 180


def _train_args(root: Path, runs: Path, name: str, *overrides: str) -> list[str]:
    settings = [*TINY_OVERRIDES, "train.devices=2", "data.cache=disk",
                f"data.cache_dir={runs.parent / 'cache'}", "train.batch_size=7", *overrides]
    return ["train", "--data", str(root), "--out", str(runs), "--name", name,
            *[arg for setting in settings for arg in ("-o", setting)]]


def _run(command: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S,
                          env={**os.environ, **env})


def _shards(trace: Path) -> dict[int, dict[int, list[int]]]:
    """rank -> epoch -> image indices trained on, from the helper's trace files."""
    shards: dict[int, dict[int, list[int]]] = {}
    for file in sorted(trace.glob("rank*.txt")):
        rows = np.loadtxt(file, dtype=int, ndmin=2)
        rank = int(file.stem.removeprefix("rank"))
        shards[rank] = {int(e): sorted(rows[rows[:, 0] == e, 1].tolist())
                        for e in np.unique(rows[:, 0])}
    return shards


def _check_one_run(runs: Path, n_train: int, trace: Path) -> Path:
    assert len(list(runs.iterdir())) == 1, list(runs.iterdir())
    run = next(runs.iterdir())
    summary = json.loads((run / "summary.json").read_text())
    oof = pd.read_csv(run / "oof.csv")
    folds = pd.read_csv(run / "folds.csv", dtype={"person": str})
    validating = set(folds["person"][folds["fold"] == 0])
    assert oof["ImageID"].is_unique and len(oof) == summary["validation"]["n"] == 7 * len(
        validating)
    assert set(oof["ImageID"].str.split("/").str[-2]) == validating
    shards = _shards(trace)
    assert sorted(shards) == [0, 1]
    for epoch in (0, 1):
        first, second = shards[0][epoch], shards[1][epoch]
        assert not set(first) & set(second)  # disjoint halves
        assert sorted(first + second) == list(range(n_train))  # that cover the epoch
    assert shards[0][0] != shards[0][1]  # and change from epoch to epoch
    assert len(list((runs.parent / "cache").rglob("pack-*.npy"))) == 1  # decoded once
    return run


def test_lightning_launcher_makes_one_run(synthetic_root, tmp_path):
    runs, trace = tmp_path / "runs", tmp_path / "trace"
    trace.mkdir()
    completed = _run([sys.executable, str(ENTRY),
                      *_train_args(synthetic_root, runs, "ddp", "train.epochs=2",
                                   "data.val_ratio=0.5")],
                     MASKCLF_TEST_TRACE=str(trace))
    assert completed.returncode == 0, completed.stderr[-3000:]
    run = _check_one_run(runs, n_train=6 * 7, trace=trace)
    assert run.name == "ddp"
    assert completed.stdout.count("run directory:") == 1  # only rank 0 reports


def test_torchrun_makes_one_run(synthetic_root, tmp_path):
    runs, trace = tmp_path / "runs", tmp_path / "trace"
    trace.mkdir()
    completed = _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                      str(ENTRY), *_train_args(synthetic_root, runs, "tr", "train.epochs=2",
                                               "data.val_ratio=0.5")],
                     MASKCLF_TEST_TRACE=str(trace))
    assert completed.returncode == 0, completed.stderr[-3000:]
    run = _check_one_run(runs, n_train=6 * 7, trace=trace)
    assert run.name.startswith("tr-torchrun-")


def test_an_interrupted_two_process_run_resumes(synthetic_root, tmp_path):
    runs = tmp_path / "runs"
    cut = _run([sys.executable, str(ENTRY),
                *_train_args(synthetic_root, runs, "cut", "train.epochs=3", "data.folds=2",
                             "train.batch_size=8")],
               MASKCLF_TEST_SIGTERM="fold1:1")
    assert cut.returncode == 143, cut.stderr[-3000:]
    run = runs / "cut"
    assert "maskclf train --resume" in cut.stderr
    assert (run / "fold0" / "result.json").is_file() and (run / "fold1" / "checkpoints"
                                                          / "last.ckpt").is_file()
    assert not (run / "summary.json").exists()
    resumed = _run([sys.executable, str(ENTRY), "train", "--resume", str(run)])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert [f["fold"] for f in summary["folds"]] == [0, 1]
    oof = pd.read_csv(run / "oof.csv")
    assert oof["ImageID"].is_unique and len(oof) == 12 * 7  # every image validated once
    metrics = pd.read_csv(run / "fold1" / "metrics.csv")
    assert sorted(metrics["epoch"].dropna().unique()) == [0, 1, 2]


def test_a_rank_that_stops_answering_fails_the_run_after_the_timeout(synthetic_root, tmp_path):
    runs = tmp_path / "runs"
    stuck = _run([sys.executable, str(ENTRY),
                  *_train_args(synthetic_root, runs, "stuck", "train.epochs=2",
                               "data.val_ratio=0.5", "train.ddp_timeout_s=10")],
                 MASKCLF_TEST_HANG="1")
    assert stuck.returncode == 2, stuck.stderr[-3000:]
    assert "another rank stopped answering" in stuck.stderr
    assert "maskclf train --resume" in stuck.stderr
