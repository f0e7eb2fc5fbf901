"""Progress output: a rich bar on a terminal, plain periodic lines in logs and CI.

Progress goes to stderr, so stdout stays free for results (``--json``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import lightning as L
from lightning.pytorch.callbacks import Callback, ProgressBar, RichProgressBar, TQDMProgressBar

from maskclf.ticker import duration


def _format(metrics: dict) -> str:
    """``train/loss=0.1234  val/f1=0.5678 ...`` with one learning rate and no per-step values."""
    shown: dict[str, float] = {}
    for key, value in sorted(metrics.items()):
        if key.startswith("lr-"):
            shown.setdefault("lr", float(value))
        elif "/" in key and not key.endswith("_step"):
            shown[key.removesuffix("_epoch")] = float(value)
    return "  ".join(f"{key}={value:.4g}" for key, value in shown.items())


class RunClock(Callback):
    """Where a run stands: which network and fold is training (``label``, e.g. "fold 2/5"),
    and the run's time left — the mean epoch time so far times the epochs left over every
    fold and network; before the first epoch ends, the first batches' pace estimates the
    epoch. Listed before the progress display, so an epoch's line already counts that
    epoch."""

    MIN_BATCHES = 3
    """Batches timed before the first estimate (the first one pays for start-up)."""

    def __init__(self, total_epochs: int, now: Callable[[], float] = time.monotonic):
        """``now``: the clock read (seconds; a test's own)."""
        self.total_epochs, self.now = total_epochs, now
        self.done = self.trained = 0
        self.seconds = 0.0
        self.label = ""
        self._started = 0.0
        self._batches = self._epoch_batches = 0

    def skip(self, epochs: int) -> None:
        """Epochs already trained in an earlier session (a finished fold of a resumed run)."""
        self.done += epochs

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = self.now()
        self._batches, self._epoch_batches = 0, int(trainer.num_training_batches)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._batches += 1

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seconds += self.now() - self._started
        self.done += 1
        self.trained += 1

    def where(self, epoch: int, epochs: int) -> str:
        """The line's head: the network and fold, and the epoch counted from 1 ("age fold
        1/2 epoch 1/3"), for the bar and the plain lines alike."""
        return f"{self.label} epoch {epoch + 1}/{epochs}".strip()

    def eta(self) -> str:
        if self.trained:
            per_epoch, this_epoch = self.seconds / self.trained, 0.0
        elif self._batches >= self.MIN_BATCHES and self._epoch_batches:
            this_epoch = self.now() - self._started
            per_epoch = this_epoch / self._batches * self._epoch_batches
        else:
            return "eta ?"
        left = max(0, self.total_epochs - self.done) * per_epoch - this_epoch
        return f"eta {duration(max(0.0, left))}"


class PlainProgress(ProgressBar):
    """Prints a line every ``every_s`` seconds within an epoch and one line per epoch, each
    with the fold and the run's time left."""

    def __init__(self, clock: RunClock, every_s: float = 30.0, stream=None):
        super().__init__()
        self.clock = clock
        self._enabled = True
        self.every_s = every_s
        self.stream = stream or sys.stderr
        self._last = 0.0
        self._epoch_start = 0.0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def print(self, *args, **kwargs) -> None:
        if self._enabled:
            print(*args, **kwargs, file=self.stream, flush=True)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = self._last = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            self.print(f"{self._where(trainer)} batch {batch_idx + 1}/"
                       f"{self.total_train_batches}  {self.clock.eta()}")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seconds = time.monotonic() - self._epoch_start
        self.print(f"{self._where(trainer)} ({seconds:.1f}s, {self.clock.eta()})  "
                   f"{_format(trainer.callback_metrics)}")

    def _where(self, trainer: L.Trainer) -> str:
        return self.clock.where(trainer.current_epoch, trainer.max_epochs)


class _ClockMetrics:
    """A Lightning bar's metrics with the run's time left (``clock``: a :class:`RunClock`)."""

    clock: RunClock

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        return {**super().get_metrics(trainer, pl_module), "eta": self.clock.eta()[4:]}


class RunProgressBar(_ClockMetrics, RichProgressBar):
    """Lightning's rich bar, counting epochs from 1 (not "Epoch 0/0"), naming the fold and
    showing the run's time left."""

    def __init__(self, clock: RunClock):
        super().__init__(console_kwargs={"stderr": True})
        self.clock = clock

    def _get_train_description(self, current_epoch: int) -> str:
        return self.clock.where(current_epoch, self.trainer.max_epochs)


class NotebookProgressBar(_ClockMetrics, TQDMProgressBar):
    """Lightning's tqdm bar, a notebook widget (``tqdm.auto``, with ipywidgets), named as
    the rich bar is: the fold, epochs from 1, the run's time left."""

    def __init__(self, clock: RunClock):
        super().__init__()
        self.clock = clock

    def on_train_epoch_start(self, trainer: L.Trainer, *args) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(
            self.clock.where(trainer.current_epoch, trainer.max_epochs))


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (where stderr is no terminal, yet a bar
    draws)."""
    shell = sys.modules.get("IPython")
    ipython = getattr(shell, "get_ipython", lambda: None)() if shell else None
    return type(ipython).__name__ == "ZMQInteractiveShell"


def progress_callback(clock: RunClock, interactive: bool | None = None) -> ProgressBar:
    """In a notebook a notebook bar; else the rich bar when stderr is a terminal, plain
    lines otherwise (both on stderr)."""
    if interactive is None and in_notebook():
        return NotebookProgressBar(clock)
    interactive = sys.stderr.isatty() if interactive is None else interactive
    return RunProgressBar(clock) if interactive else PlainProgress(clock)
