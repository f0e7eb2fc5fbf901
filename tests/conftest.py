"""Shared fixtures: one tiny synthetic dataset per session and a tiny CPU config."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from maskclf.config import RunConfig, load_config
from maskclf.data.synthetic import make_synthetic

TINY_OVERRIDES = [
    "model.name=test_byobnet",
    "data.image_size=[64,48]",
    "data.num_workers=0",
    "train.epochs=1",
    "train.batch_size=16",
    "data.cache=memory",
    "train.accelerator=cpu",
    "train.devices=1",
    "train.log_every_n_steps=1",
    "train.report=false",
]


@pytest.fixture(autouse=True)
def _quiet_lightning():
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """12 training persons and 2 eval persons; treat as read-only (copy to modify)."""
    return make_synthetic(tmp_path_factory.mktemp("synthetic") / "data", persons=12,
                          eval_persons=2, seed=0)


@pytest.fixture
def dataset_copy(synthetic_root, tmp_path) -> Path:
    """A private, writable copy of the synthetic dataset."""
    return Path(shutil.copytree(synthetic_root, tmp_path / "data"))


def tiny_config(*overrides: str) -> RunConfig:
    return load_config(None, [*TINY_OVERRIDES, *overrides])
