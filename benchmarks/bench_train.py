"""Training-step throughput: maskclf's Lightning training against a plain PyTorch loop.

    python benchmarks/bench_train.py DATA [--model test_byobnet] [--size 96 72]
        [--batch-size 32] [--steps 40] [--workers 0] [--layouts]

Both sides train the same timm model (same init), batch size, optimizer and cached data
(the decode-once cache is filled first). maskclf runs its real ``ClassifierModule`` in a
Lightning Trainer; the reference is a hand-written loop. Prints images/s and ``ratio_train``.

``--layouts`` instead times maskclf's training in each memory layout (contiguous,
channels_last) and precision (32, bf16-mixed; 16-mixed too on a GPU) and prints a table
with each one's ratio against PyTorch's default, contiguous fp32 (``train.channels_last``
and ``train.precision`` choose among them).

``--compile`` instead times maskclf's training eager and with ``train.compile: true``
(torch.compile): the seconds before the first timed step (compiling happens there) and the
images/s after it, and ``ratio_compile`` (compiled / eager images/s).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader

from maskclf.config import load_config
from maskclf.data.cache import build_cache
from maskclf.data.layout import read_train
from maskclf.data.loaders import make_dataset
from maskclf.models.factory import build_net
from maskclf.models.spec import resolve_specs
from maskclf.predict.module import quiet_lightning
from maskclf.train.module import build_module


class StepTimer(Callback):
    """Wall time of the training steps after ``skip`` warm-up steps."""

    def __init__(self, skip: int):
        self.skip, self.started, self.ended, self.images = skip, None, None, 0
        self.fit_started = None

    def on_train_start(self, trainer, pl_module):
        self.fit_started = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.skip:
            self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx >= self.skip:
            self.images += len(batch[0])
            self.ended = time.perf_counter()

    def rate(self) -> float:
        return self.images / (self.ended - self.started)

    def warmup_s(self) -> float:
        """Seconds from the start of training to the first timed step (compiling)."""
        return self.started - self.fit_started


def plain_steps(module, cfg, loader, skip: int = 0, max_steps: int | None = None) -> float:
    """The reference: a hand-written PyTorch loop; images/s after ``skip`` steps."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    module = module.to(device).train()
    optimizer = torch.optim.AdamW(module.net.parameters(), lr=cfg.optim.lr,
                                  weight_decay=cfg.optim.weight_decay)
    images_done, started = 0, time.perf_counter()
    for step, (images, targets) in enumerate(loader):
        if step == max_steps:
            break
        if step == skip:
            started = time.perf_counter()
        images, targets = images.to(device), targets.to(device)
        loss = module.task.loss(module.net(module.normalize(images)), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= skip:
            images_done += len(images)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return images_done / (time.perf_counter() - started)


def lightning_rate(cfg, loader, skip: int, precision: str = "32") -> float:
    """Images/s of maskclf's real module in a Lightning Trainer after ``skip`` steps."""
    return lightning_timer(cfg, loader, skip, precision).rate()


def lightning_timer(cfg, loader, skip: int, precision: str = "32") -> StepTimer:
    """maskclf's real module trained in a Lightning Trainer, timed after ``skip`` steps."""
    spec = resolve_specs(cfg)[0]
    torch.manual_seed(0)
    module = build_module(spec, build_net(spec))
    timer = StepTimer(skip)
    with quiet_lightning():
        trainer = L.Trainer(max_epochs=1, accelerator="auto", devices=1, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, callbacks=[timer],
                            num_sanity_val_steps=0, precision=precision)
        trainer.fit(module, loader())
    return timer


def layout_table(base_cfg, loader, skip: int) -> None:
    """Every layout x precision of maskclf's training, against contiguous fp32."""
    precisions = ["32", "bf16-mixed", *(["16-mixed"] if torch.cuda.is_available() else [])]
    rows = []
    for channels_last in (False, True):
        for precision in precisions:
            cfg = base_cfg.model_copy(update={"train": base_cfg.train.model_copy(update={
                "channels_last": channels_last, "precision": precision})})
            rows.append(("channels_last" if channels_last else "contiguous", precision,
                         lightning_rate(cfg, loader, skip, precision)))
    reference = rows[0][2]
    print(f"{'layout':<14} {'precision':<11} {'images/s':>9} {'ratio':>6}")
    for layout, precision, rate in rows:
        print(f"{layout:<14} {precision:<11} {rate:>9.1f} {rate / reference:>6.2f}")
    best = max(rows, key=lambda row: row[2])
    print(f"fastest={best[0]},{best[1]} ratio_fastest={best[2] / reference:.2f}")


def compile_table(base_cfg, loader, skip: int) -> None:
    """maskclf's training eager and with ``train.compile``: warm-up seconds, images/s."""
    rows = []
    for compiled in (False, True):
        cfg = base_cfg.model_copy(update={"train": base_cfg.train.model_copy(update={
            "compile": compiled})})
        timer = lightning_timer(cfg, loader, skip, cfg.train.precision)
        rows.append(("compiled" if compiled else "eager", timer.warmup_s(), timer.rate()))
    print(f"{'mode':<9} {'first steps s':>13} {'images/s':>9}")
    for mode, warmup, rate in rows:
        print(f"{mode:<9} {warmup:>13.1f} {rate:>9.1f}")
    print(f"ratio_compile={rows[1][2] / rows[0][2]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--model", default="test_byobnet")
    parser.add_argument("--size", type=int, nargs=2, default=(96, 72))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--layouts", action="store_true",
                        help="Time each memory layout and precision instead.")
    parser.add_argument("--compile", action="store_true",
                        help="Time eager against train.compile instead.")
    args = parser.parse_args()
    skip = 5
    with tempfile.TemporaryDirectory() as cache_dir:
        cfg = load_config(None, [f"model.name={args.model}", f"data.image_size={list(args.size)}",
                                 "data.cache=disk", f"data.cache_dir={cache_dir}",
                                 f"data.num_workers={args.workers}", "train.accelerator=auto",
                                 f"train.batch_size={args.batch_size}", "sched.name=none"])
        paths = read_train(args.data, check_images=False)["path"].tolist()
        paths = paths[: args.batch_size * (args.steps + skip)]
        build_cache(args.data, cfg.data, paths)
        dataset = make_dataset(cfg, args.data, paths, [0] * len(paths), train=True)

        def loader():
            return DataLoader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True,
                              num_workers=args.workers, persistent_workers=args.workers > 0)

        spec = resolve_specs(cfg)[0]
        plain_steps(build_module(spec, build_net(spec)), cfg, loader(),
                    max_steps=15)  # process warm-up (kernels, allocator) shared by both sides
        if args.layouts or args.compile:
            print(f"model={args.model} size={args.size[0]}x{args.size[1]} "
                  f"batch={args.batch_size} steps={args.steps} threads={torch.get_num_threads()}")
            (layout_table if args.layouts else compile_table)(cfg, loader, skip)
            return
        maskclf_rate = lightning_rate(cfg, loader, skip)

        torch.manual_seed(0)
        reference_rate = plain_steps(build_module(spec, build_net(spec)), cfg, loader(),
                                     skip=skip)
        device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"model={args.model} size={args.size[0]}x{args.size[1]} batch={args.batch_size} "
          f"steps={args.steps} device={device}")
    print(f"reference_plain_loop_images_per_s={reference_rate:.1f}")
    print(f"maskclf_images_per_s={maskclf_rate:.1f}")
    print(f"ratio_train={maskclf_rate / reference_rate:.2f}")


if __name__ == "__main__":
    main()
