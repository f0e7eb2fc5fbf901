"""``maskclf`` with test hooks in every rank: Lightning's launcher re-runs this file per device.

``MASKCLF_TEST_TRACE=DIR``: each rank appends the ``epoch index`` keys it trains on to
``DIR/rank<r>.txt``. ``MASKCLF_TEST_SIGTERM=FOLD:EPOCH``: global rank 0 sends itself SIGTERM
in the second batch of that epoch of that fold. ``MASKCLF_TEST_HANG=1``: global rank 1
stops answering (sleeps) in its second batch.
"""

import os
import signal
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from maskclf.cli import app
from maskclf.data.dataset import ImageDataset
from maskclf.train import fold as fold_fitting


def _rank() -> str:
    return os.environ.get("RANK") or os.environ.get("LOCAL_RANK", "0")


if os.environ.get("MASKCLF_TEST_TRACE"):
    trace, original = Path(os.environ["MASKCLF_TEST_TRACE"]), ImageDataset.__getitem__

    def traced(self, key):
        if isinstance(key, tuple):
            with open(trace / f"rank{_rank()}.txt", "a") as out:
                out.write(f"{key[1]} {key[0]}\n")
        return original(self, key)

    ImageDataset.__getitem__ = traced


class _SigtermAt(Callback):
    def __init__(self, fold: str, epoch: int):
        self.fold, self.epoch = fold, epoch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        here = self.fold in str(trainer.loggers[0].save_dir)
        if here and trainer.global_rank == 0 and trainer.current_epoch == self.epoch \
                and batch_idx == 1:
            os.kill(os.getpid(), signal.SIGTERM)


class _HangOnRankOne(Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_rank == 1 and batch_idx == 1:
            time.sleep(90)


def _with(callback_factory):
    build = fold_fitting.build_trainer

    def dressed(*args, **kwargs):
        trainer, checkpoint = build(*args, **kwargs)
        trainer.callbacks.append(callback_factory())
        return trainer, checkpoint

    fold_fitting.build_trainer = dressed


if os.environ.get("MASKCLF_TEST_HANG"):
    _with(_HangOnRankOne)

if os.environ.get("MASKCLF_TEST_SIGTERM"):
    fold, epoch = os.environ["MASKCLF_TEST_SIGTERM"].split(":")
    _with(lambda: _SigtermAt(fold, int(epoch)))

if __name__ == "__main__":
    app(prog_name="maskclf")
