"""Training throughput: one process against two DDP processes (gloo on CPU, NCCL on GPUs).

    python benchmarks/bench_ddp.py DATA [--model test_byobnet] [--size 96 72] [--epochs 3]

Runs ``maskclf train`` three times on the same data and config (single split, no
validation, so only training is timed): one process with one thread (the reference), one
process with two threads, and ``train.devices=2`` (Lightning's launcher, one thread per
rank). Images/s come from rank 0's per-epoch lines (``epoch k/N (s)``), first epoch
skipped (start-up); ``ratio_ddp`` is DDP against the one-thread reference and
``ratio_ddp_vs_2_threads`` against one process using both threads.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

EPOCH_LINE = re.compile(r"^epoch (\d+)/\d+ \(([\d.]+)s\)", re.M)


def train_epochs(data: Path, runs: Path, name: str, overrides: list[str], threads: int
                 ) -> tuple[int, list[float]]:
    """Run ``maskclf train``: its training images and rank 0's seconds per epoch."""
    command = [sys.executable, "-m", "maskclf", "train", "--data", str(data), "--out", str(runs),
               "--name", name, "--json", *[a for o in overrides for a in ("-o", o)]]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    completed = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    seconds = [float(s) for _, s in EPOCH_LINE.findall(completed.stderr)]
    return json.loads(completed.stdout)["n_images"], seconds


def train_rate(data: Path, runs: Path, name: str, overrides: list[str], threads: int) -> float:
    """Images per second of a ``maskclf train`` run, its first (start-up) epoch skipped."""
    images, seconds = train_epochs(data, runs, name, overrides, threads)
    return images * len(seconds[1:]) / sum(seconds[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--model", default="test_byobnet")
    parser.add_argument("--size", type=int, nargs=2, default=[96, 72])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        overrides = [f"model.name={args.model}", f"data.image_size={list(args.size)}",
                     f"train.epochs={args.epochs}", f"train.batch_size={args.batch_size}",
                     "data.val_ratio=0", "data.num_workers=0", "data.cache=disk",
                     f"data.cache_dir={work}/cache", "train.accelerator=auto",
                     "train.report=false", "sched.name=none"]
        runs = Path(work) / "runs"
        train_epochs(args.data, runs, "warm-cache", [*overrides, "train.epochs=1"], threads=2)
        one = train_rate(args.data, runs, "one", [*overrides, "train.devices=1"], threads=1)
        two_threads = train_rate(args.data, runs, "two-threads",
                                 [*overrides, "train.devices=1"], threads=2)
        ddp = train_rate(args.data, runs, "ddp", [*overrides, "train.devices=2"], threads=1)
    print(f"model={args.model} size={args.size[0]}x{args.size[1]} epochs={args.epochs} "
          f"batch={args.batch_size} (per rank)")
    print(f"one_process_1_thread_images_per_s={one:.1f}")
    print(f"one_process_2_threads_images_per_s={two_threads:.1f}")
    print(f"ddp_2_processes_images_per_s={ddp:.1f}")
    print(f"ratio_ddp={ddp / one:.2f}")
    print(f"ratio_ddp_vs_2_threads={ddp / two_threads:.2f}")


if __name__ == "__main__":
    main()
