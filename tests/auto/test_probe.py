"""``maskclf auto``'s speed probe: warm batches of the real pipeline, loading included."""

from pathlib import Path

import torch

from maskclf.auto import probe
from maskclf.data.dataset import ImageDataset
from tests.conftest import tiny_config


def _clock(monkeypatch, ticks: list[float]) -> None:
    moments = iter(ticks)
    monkeypatch.setattr(probe.time, "perf_counter", lambda: next(moments))


def test_the_pace_leaves_out_the_warm_batches_and_times_a_short_loop_whole(monkeypatch):
    pace = probe.BatchPace(warm=1)
    batch = (torch.zeros(4, 3, 8, 8), torch.zeros(4))
    # training: the first batch pays for the loader's start (10 s), then 1 s a batch
    _clock(monkeypatch, [0.0, 10.0, 11.0, 12.0, 13.0])
    pace.on_train_epoch_start(None, None)
    for index in range(4):
        pace.on_train_batch_end(None, None, None, batch, index)
    assert pace.per_image("train") == 3.0 / 12
    # validation has one batch only: nothing is left to time but all of it
    _clock(monkeypatch, [20.0, 25.0])
    pace.on_validation_epoch_start(None, None)
    pace.on_validation_batch_end(None, None, None, batch, 0)
    assert pace.per_image("val") == 5.0 / 4


def test_the_probe_times_loading_and_writes_nothing(synthetic_root, tmp_path, monkeypatch):
    """Slow image loading (a slow disk, heavy decoding) is in the estimate: the old probe
    timed the network on random tensors and missed it."""
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config("data.cache=none")
    fast = probe.probe_speed(cfg, synthetic_root)
    load = ImageDataset.load

    def slow_load(self, index):
        import time

        time.sleep(0.02)
        return load(self, index)

    monkeypatch.setattr(ImageDataset, "load", slow_load)
    slow = probe.probe_speed(cfg, synthetic_root)
    assert slow.train_s >= 0.02 and slow.predict_s >= 0.02
    assert slow.train_s > fast.train_s and fast.train_s > 0 and fast.predict_s > 0
    assert list(Path(tmp_path).iterdir()) == []  # no run folder, no log, no checkpoint
