"""Inference speed and quality of one network on four backends: eager PyTorch,
``torch.compile``, ONNX fp32 and ONNX int8 (``maskclf export --int8``) on onnxruntime.

    python benchmarks/bench_infer.py RUN [--data DATA] [--threads 2] [--latency-images 64]

Takes one network of RUN (its only fold, or the best one of a k-fold run, as ``maskclf
export --folds best`` picks it) and that fold's validation rows
(``oof.csv``), preprocessed once as the network sees them; every backend gets the same
uint8 batches and the same thread count. For each: median latency and images/s at batch 1
(``--latency-images`` single images) and images/s at batch 32 (every validation row), and
macro F1 of its predictions of those rows. The int8 files come from ``maskclf export
--int8 --force`` (so they exist however much F1 they lose). Prints one line per backend,
then the ratios of each backend's images/s to eager PyTorch's: ``ratio_compile``,
``ratio_onnx``, ``ratio_int8`` at batch 1 and 32, and ``int8_f1_drop`` against ONNX fp32.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from maskclf.data.transforms import evaluation_view
from maskclf.deploy.export import PredictionGraph, export_run
from maskclf.deploy.request import ExportRequest
from maskclf.metrics import macro_f1
from maskclf.models.factory import load_net
from maskclf.models.spec import resolve_specs
from maskclf.predict.onnx_backend import ExportedModel, run_session
from maskclf.runs.directory import RunDir

Backend = Callable[[np.ndarray], np.ndarray]


def onnx_backend(folder: Path, threads: int) -> Backend:
    model = ExportedModel.load(folder, threads)
    session = model.sessions[model.networks[0]]
    return lambda batch: run_session(session, batch)


def torch_backend(graph: torch.nn.Module) -> Backend:
    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return graph(torch.from_numpy(batch)).numpy()
    return run


def measure(backend: Backend, images: np.ndarray, latency_images: int) -> dict:
    """Latency at batch 1, images/s at batch 1 and 32, and the batch-32 probabilities."""
    for _ in range(3):  # first-call setup (allocations, compilation) is not timed
        backend(images[:1])
        backend(images[:32])
    singles = []
    # sliced as in the warm-up: image[None] has other strides, which recompiles torch.compile
    for i in range(min(latency_images, len(images))):
        started = time.perf_counter()
        backend(images[i:i + 1])
        singles.append(time.perf_counter() - started)
    started = time.perf_counter()
    probs = np.concatenate([backend(images[i:i + 32]) for i in range(0, len(images), 32)])
    batched = time.perf_counter() - started
    singles = np.array(singles)
    return {"p50_ms": 1000 * float(np.median(singles)), "b1_ips": len(singles) / singles.sum(),
            "b32_ips": len(images) / batched, "probs": probs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--latency-images", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run = RunDir.open(args.run).require_finished()
    cfg = run.read_config()
    specs = resolve_specs(cfg)
    if len(specs) != 1:
        raise SystemExit(f"{run.path}: a per-attribute run has three networks a fold; "
                         "bench_infer times one network")
    oof = pd.read_csv(run.file(RunDir.OOF))
    root = run.data_root(args.data)
    folds = "all" if oof["fold"].nunique() == 1 else "best"
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "fp32", Path(tmp) / "int8"
        exported = export_run(ExportRequest(run.path, fp32, folds=folds, data=root))
        fold = exported["networks"][0]["fold"]
        manifest = export_run(ExportRequest(run.path, int8, folds=folds, data=root, int8=True,
                                            force=True))
        rows = oof[oof["fold"] == fold]
        images = np.stack([evaluation_view(root / p, cfg.data) for p in rows["ImageID"]])
        truth = rows["class"].to_numpy()
        print(f"{run.path} fold {fold}: {cfg.model.name} {specs[0].task}, {len(images)} "
              f"validation images at {images.shape[1]} x {images.shape[2]}, "
              f"{args.threads} threads")
        graph = PredictionGraph(load_net(run.fold(specs[0], fold).checkpoint()),
                                cfg.predict.tta).eval()
        backends: dict[str, Backend] = {"eager": torch_backend(graph)}
        entry = manifest["int8"]
        notes = {"int8": f"calibrated on {entry['calibration_images']} training images, "
                         f"{entry['calibration']} ranges, first {entry['float_convolutions']} "
                         "convolutions float"}
        try:
            compiled = torch_backend(torch.compile(graph))
            started = time.perf_counter()
            compiled(images[:1])
            notes["compile"] = f"first call {time.perf_counter() - started:.1f}s"
            backends["compile"] = compiled
        except Exception as exc:  # noqa: BLE001 - torch.compile's failures vary by machine
            notes["compile"] = (f"unavailable: {type(exc).__name__}: "
                                f"{str(exc).splitlines()[0][:120]}")
        backends["onnx"] = onnx_backend(fp32, args.threads)
        backends["int8"] = onnx_backend(int8, args.threads)
        results = {name: measure(backend, images, args.latency_images)
                   for name, backend in backends.items()}
    for name, result in results.items():
        f1 = macro_f1(truth, result["probs"].argmax(axis=1))
        result["f1"] = f1
        print(f"{name:8s} batch 1: p50 {result['p50_ms']:6.1f} ms, {result['b1_ips']:6.1f} "
              f"images/s   batch 32: {result['b32_ips']:6.1f} images/s   macro F1 {f1:.4f}"
              + (f"   ({notes[name]})" if name in notes else ""))
    if "compile" not in results:
        print(f"compile  {notes['compile']}")
    eager = results["eager"]
    ratios = [f"ratio_{name}_b{b}={results[name][f'b{b}_ips'] / eager[f'b{b}_ips']:.2f}"
              for name in results if name != "eager" for b in (1, 32)]
    print("  ".join(ratios) + "  (images/s against eager PyTorch, same threads)")
    print(f"int8_f1_drop={results['onnx']['f1'] - results['int8']['f1']:.4f}  "
          f"onnx_vs_eager_f1={results['onnx']['f1'] - eager['f1']:+.4f}")


if __name__ == "__main__":
    main()
