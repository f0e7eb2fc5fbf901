"""``POST /predict`` latency and throughput: onnxruntime (what ``maskclf serve`` runs)
against PyTorch eager for the same networks, through the same FastAPI app.

    python benchmarks/bench_serve.py RUN [--data DATA] [--requests 50] [--threads 2]

Exports RUN to a temporary folder, then posts ``--requests`` photos of DATA (eval images;
the run's data by default) one request at a time to the app over FastAPI's TestClient, once
with the ONNX sessions and once with the torch modules the export was made from. Prints
images/s, p50 and p95 latency of each and ``ratio_onnx`` (torch p50 / onnxruntime p50).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from fastapi.testclient import TestClient

from maskclf.data.layout import read_eval
from maskclf.export import PredictionGraph, export_run
from maskclf.exported import ExportedModel
from maskclf.models.factory import load_net
from maskclf.models.spec import resolve_specs
from maskclf.rundir import RunDir
from maskclf.serve import create_app


class EagerModel(ExportedModel):
    """The export's interface over the torch modules it was exported from."""

    def __init__(self, exported: ExportedModel, run: RunDir):
        specs = {spec.task: spec for spec in resolve_specs(run.read_config())}
        graphs = {network: PredictionGraph(load_net(
            run.fold(specs[network.task], network.fold).checkpoint()), exported.views)
            for network in exported.networks}
        super().__init__(exported.folder, exported.manifest, graphs)

    @staticmethod
    def run_one(graph, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return graph(torch.from_numpy(batch)).numpy()


def timed_requests(model: ExportedModel, photos: list[bytes]) -> np.ndarray:
    client = TestClient(create_app(model))
    client.post("/predict", files={"files": ("warm.jpg", photos[0])})  # first-call setup
    seconds = []
    for i, photo in enumerate(photos):
        started = time.perf_counter()
        response = client.post("/predict", files={"files": (f"{i}.jpg", photo)})
        seconds.append(time.perf_counter() - started)
        response.raise_for_status()
    return np.array(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run = RunDir.open(args.run)
    data = args.data or Path(run.read_record()["data"])
    paths = read_eval(data, check_images=False)["path"].tolist()
    photos = [(data / paths[i % len(paths)]).read_bytes() for i in range(args.requests)]
    with tempfile.TemporaryDirectory() as tmp:
        export_run(run.path, tmp, data_root=data)
        onnx = ExportedModel.load(tmp, threads=args.threads)
        eager = EagerModel(onnx, run)
        results = {"torch eager": timed_requests(eager, photos),
                   "onnxruntime": timed_requests(onnx, photos)}
    for name, seconds in results.items():
        print(f"{name:12s} {len(seconds) / seconds.sum():6.1f} images/s   "
              f"p50 {1000 * np.median(seconds):7.1f} ms   "
              f"p95 {1000 * np.percentile(seconds, 95):7.1f} ms")
    ratio = np.median(results["torch eager"]) / np.median(results["onnxruntime"])
    print(f"ratio_onnx={ratio:.2f}  (torch eager p50 / onnxruntime p50, {args.threads} "
          f"threads, {args.requests} requests of one photo, model {run.read_config().model.name})")


if __name__ == "__main__":
    main()
