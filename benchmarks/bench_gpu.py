"""GPU training throughput: one epoch of the baseline recipe on synthetic 384 x 512 photos,
and what ``train.precision: 16-mixed``, ``train.channels_last`` and ``train.compile`` each
change. Meant for a GPU machine (one short call measures everything); runs on CPU too.

    python benchmarks/bench_gpu.py [--persons 300] [--model efficientnet_b0]
        [--size 384 288] [--batch-size 64] [--variants fp32,16-mixed,channels_last,compile,all]

Writes the synthetic competition layout (7 photos of 384 x 512 per person) to a temporary
folder, then trains ``configs/baseline.yaml`` (random initial weights: nothing is
downloaded; no validation split, so the epoch is all training) once per variant through
``maskclf``'s own pipeline; the decode-once cache is built before the first epoch and
shared. A callback times the training batches after ``--skip`` warm-up ones (the GPU is
synchronised at each batch's end): images/s, milliseconds per step, and the share of the
time spent between one batch's end and the next one's start, i.e. waiting for the loader.
A variant that fails (say ``compile`` without a compiler) prints why and the rest go on.
Prints one line per variant and ``ratio_<variant>`` = its images/s over fp32's.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

from maskclf.config import load_config
from maskclf.data.synthetic import make_synthetic
from maskclf.train.execute import train_run

VARIANTS = {
    "fp32": [],
    "16-mixed": ["train.precision=16-mixed"],
    "channels_last": ["train.channels_last=true"],
    "compile": ["train.compile=true"],
    "all": ["train.precision=16-mixed", "train.channels_last=true", "train.compile=true"],
}


class BatchClock(Callback):
    """Training-batch timings after ``skip`` warm-up batches: busy (start to end of a batch)
    and waiting (end of one to the start of the next: the loader)."""

    def __init__(self, skip: int):
        self.skip, self.busy, self.waiting, self.images, self.steps = skip, 0.0, 0.0, 0, 0
        self.started = self.ended = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.started = time.perf_counter()
        if batch_idx > self.skip and self.ended is not None:
            self.waiting += self.started - self.ended

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.ended = time.perf_counter()
        if batch_idx >= self.skip:
            self.busy += self.ended - self.started
            self.images += len(batch[0])
            self.steps += 1

    def figures(self) -> dict:
        total = self.busy + self.waiting
        return {"images_per_s": self.images / total, "data_wait_share": self.waiting / total,
                "images": self.images, "ms_per_step": 1000 * total / self.steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=300)
    parser.add_argument("--model", default="efficientnet_b0")
    parser.add_argument("--size", type=int, nargs=2, default=(384, 288))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--skip", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    chosen = args.variants.split(",")
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; choose from {list(VARIANTS)}")
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    print(f"device={device} model={args.model} size={args.size[0]}x{args.size[1]} "
          f"batch={args.batch_size} persons={args.persons} ({7 * args.persons} photos)")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = make_synthetic(Path(tmp) / "data", persons=args.persons, eval_persons=1)
        for variant in chosen:
            cfg = load_config("baseline", [
                f"model.name={args.model}", "model.pretrained=false",
                f"data.image_size={list(args.size)}", "data.val_ratio=0", "data.cache=disk",
                f"data.cache_dir={tmp}/cache", "train.precision=32", "train.epochs=1",
                f"train.batch_size={args.batch_size}", "train.report=false",
                "train.accelerator=auto", *VARIANTS[variant]])
            clock = BatchClock(args.skip)
            try:
                train_run(cfg, data, Path(tmp) / "runs", variant, interactive=False,
                          callbacks=[clock])
            except Exception as exc:  # noqa: BLE001 - report the variant, go on
                print(f"{variant:14s} failed: {type(exc).__name__}: "
                      f"{str(exc).splitlines()[0][:160]}")
                continue
            if clock.images == 0:
                print(f"{variant:14s} too few batches to time after {args.skip} warm-up ones")
                continue
            results[variant] = figures = clock.figures()
            print(f"{variant:14s} {figures['images_per_s']:8.1f} images/s   data wait "
                  f"{100 * figures['data_wait_share']:5.1f} % of step time   "
                  f"{figures['ms_per_step']:7.1f} ms/step   "
                  f"({figures['images']} images timed)")
    if "fp32" in results:
        base = results["fp32"]["images_per_s"]
        print("  ".join(f"ratio_{name}={figures['images_per_s'] / base:.2f}"
                        for name, figures in results.items() if name != "fp32"))


if __name__ == "__main__":
    main()
