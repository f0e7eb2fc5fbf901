"""``POST /predict`` latency and throughput: onnxruntime (what ``maskclf serve`` runs)
against PyTorch eager for the same networks, through the same FastAPI app; or, with
``--clients``, a load test of a real ``maskclf serve`` on 127.0.0.1.

    python benchmarks/bench_serve.py RUN [--data DATA] [--requests 50] [--threads 2]
    python benchmarks/bench_serve.py RUN --clients 16 --requests 2000 [--max-concurrent 4]

Exports RUN to a temporary folder, then posts ``--requests`` photos of DATA (eval images;
the run's data by default) one request at a time to the app over FastAPI's TestClient, once
with the ONNX sessions and once with the torch modules the export was made from. Prints
images/s, p50 and p95 latency of each and ``ratio_onnx`` (torch p50 / onnxruntime p50); for
an export with activation maps also onnxruntime with ``?cam=1`` and ``ratio_cam`` (its p50 /
the plain p50).

Load mode starts ``maskclf serve EXPORT`` as its own process and sends ``--requests``
requests (one photo each) from ``--clients`` concurrent clients; it prints requests/s,
p50/p95/p99 latency, the error count (any answer but 200), and the server's resident
memory after the first 100 requests and at the end (``ratio_memory`` = end / after 100).
"""

from __future__ import annotations

import argparse
import http.client
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from fastapi.testclient import TestClient

from maskclf.data.layout import read_eval
from maskclf.deploy.export import PredictionGraph, export_run
from maskclf.deploy.request import ExportRequest
from maskclf.deploy.serve import create_app
from maskclf.models.factory import load_net
from maskclf.models.spec import resolve_specs
from maskclf.predict.onnx_backend import ExportedModel
from maskclf.runs.directory import RunDir

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.helpers.server import served  # noqa: E402


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


def timed_requests(model: ExportedModel, photos: list[bytes], route: str = "/predict"
                   ) -> np.ndarray:
    client = TestClient(create_app(model))
    client.post(route, files={"files": ("warm.jpg", photos[0])})  # first-call setup
    seconds = []
    for i, photo in enumerate(photos):
        started = time.perf_counter()
        response = client.post(route, files={"files": (f"{i}.jpg", photo)})
        seconds.append(time.perf_counter() - started)
        response.raise_for_status()
    return np.array(seconds)


def resident_mb(pid: int) -> float:
    """The process's resident memory (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def _multipart(name: str, photo: bytes) -> tuple[bytes, str]:
    boundary = "maskclfbench"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; "
            f"filename=\"{name}\"\r\nContent-Type: image/jpeg\r\n\r\n").encode() + photo + (
        f"\r\n--{boundary}--\r\n").encode()
    return body, f"multipart/form-data; boundary={boundary}"


def load_test(export: Path, photos: list[bytes], clients: int, max_concurrent: int) -> None:
    """A real server, ``clients`` threads each posting its share of the photos."""
    with served(export, "--max-concurrent", str(max_concurrent)) as running:
        server, port = running.process, running.port
        started_mb = resident_mb(server.pid)
        lock, done, marks = threading.Lock(), [0], {}
        latencies, errors = [], [0]

        def one(i: int) -> None:
            body, kind = _multipart(f"{i}.jpg", photos[i])
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            began = time.perf_counter()
            try:
                connection.request("POST", "/predict", body, {"Content-Type": kind})
                status = connection.getresponse().status
            except OSError:
                status = 0
            finally:
                connection.close()
            with lock:
                latencies.append(time.perf_counter() - began)
                errors[0] += status != 200
                done[0] += 1
                if done[0] == 100:
                    marks["after_100"] = resident_mb(server.pid)

        began = time.perf_counter()
        with ThreadPoolExecutor(max_workers=clients) as pool:
            list(pool.map(one, range(len(photos))))
        seconds = time.perf_counter() - began
        end_mb = resident_mb(server.pid)
    ms = 1000 * np.array(latencies)
    after_100 = marks.get("after_100", started_mb)
    print(f"load: {clients} clients, {len(photos)} requests, server --max-concurrent "
          f"{max_concurrent}: {len(photos) / seconds:.1f} requests/s, p50 "
          f"{np.percentile(ms, 50):.1f} ms, p95 {np.percentile(ms, 95):.1f} ms, p99 "
          f"{np.percentile(ms, 99):.1f} ms, errors {errors[0]}")
    print(f"server memory: {started_mb:.0f} MB at start, {after_100:.0f} MB after 100 "
          f"requests, {end_mb:.0f} MB at the end; ratio_memory={end_mb / after_100:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clients", type=int, default=None,
                        help="load mode: this many concurrent clients (16 is a good start)")
    parser.add_argument("--max-concurrent", type=int, default=4,
                        help="load mode: the server's --max-concurrent")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run = RunDir.open(args.run)
    data = args.data or Path(run.read_record()["data"])
    paths = read_eval(data, check_images=False)["path"].tolist()
    photos = [(data / paths[i % len(paths)]).read_bytes() for i in range(args.requests)]
    with tempfile.TemporaryDirectory() as tmp:
        export_run(ExportRequest(run.path, tmp, data=data))
        if args.clients is not None:
            load_test(Path(tmp), photos, args.clients, args.max_concurrent)
            return
        onnx = ExportedModel.load(tmp, threads=args.threads)
        eager = EagerModel(onnx, run)
        results = {"torch eager": timed_requests(eager, photos),
                   "onnxruntime": timed_requests(onnx, photos)}
        if onnx.cam_unavailable is None:
            results["onnx ?cam=1"] = timed_requests(onnx, photos, "/predict?cam=1")
    for name, seconds in results.items():
        print(f"{name:12s} {len(seconds) / seconds.sum():6.1f} images/s   "
              f"p50 {1000 * np.median(seconds):7.1f} ms   "
              f"p95 {1000 * np.percentile(seconds, 95):7.1f} ms")
    ratio = np.median(results["torch eager"]) / np.median(results["onnxruntime"])
    print(f"ratio_onnx={ratio:.2f}  (torch eager p50 / onnxruntime p50, {args.threads} "
          f"threads, {args.requests} requests of one photo, model {run.read_config().model.name})")
    if "onnx ?cam=1" in results:
        cam = np.median(results["onnx ?cam=1"]) / np.median(results["onnxruntime"])
        print(f"ratio_cam={cam:.2f}  (p50 with the activation maps / without)")


if __name__ == "__main__":
    main()
