"""The benchmarks keep working on a tiny scale: the GPU one where no GPU is (two variants
on CPU), the inference one on a tiny trained network (every backend, its F1, the ratios)."""

import subprocess
import sys
from pathlib import Path

import pytest

from maskclf.config import load_config

from .conftest import TINY_OVERRIDES

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_gpu_times_each_variant_and_prints_the_ratios(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--persons", "6",
         "--model", "test_byobnet", "--size", "64", "48", "--batch-size", "8", "--skip", "1",
         "--variants", "fp32,channels_last"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    timed = [line for line in lines if "images/s" in line and "data wait" in line]
    assert [line.split()[0] for line in timed] == ["fp32", "channels_last"], result.stdout
    share = float(timed[0].split("data wait")[1].split("%")[0])
    assert 0 <= share < 100
    assert lines[-1].startswith("ratio_channels_last=")
    assert float(lines[-1].split("=")[1]) > 0


@pytest.mark.slow
def test_bench_train_prints_a_layout_and_precision_table_against_the_default(
        synthetic_root, tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_train.py"), str(synthetic_root),
         "--size", "64", "48", "--batch-size", "8", "--steps", "8", "--layouts"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line.split() for line in result.stdout.splitlines()
            if line.startswith(("contiguous", "channels_last"))]
    assert [(r[0], r[1]) for r in rows] == [("contiguous", "32"), ("contiguous", "bf16-mixed"),
                                            ("channels_last", "32"),
                                            ("channels_last", "bf16-mixed")], result.stdout
    assert float(rows[0][3]) == 1.0 and all(float(r[2]) > 0 for r in rows)
    fastest = max(rows, key=lambda r: float(r[2]))
    assert result.stdout.splitlines()[-1].startswith(f"fastest={fastest[0]},{fastest[1]}")


@pytest.mark.slow
def test_bench_infer_times_every_backend_on_the_same_rows(synthetic_root, tmp_path):
    pytest.importorskip("onnxruntime")
    from maskclf.train.execute import train_run

    cfg = load_config(None, [*TINY_OVERRIDES, "data.folds=0", "data.val_ratio=0.3"])
    run = train_run(cfg, synthetic_root, tmp_path / "runs", "one", interactive=False).run
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_infer.py"), str(run),
         "--threads", "1", "--latency-images", "4"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    timed = {line.split()[0]: line for line in lines if "macro F1" in line}
    assert {"eager", "onnx", "int8"} <= set(timed), result.stdout
    assert "compile" in timed or any(line.startswith("compile  unavailable") for line in lines)
    ratios = dict(part.split("=") for part in lines[-2].split() if "=" in part)
    assert float(ratios["ratio_onnx_b1"]) > 0 and float(ratios["ratio_int8_b32"]) > 0
    checks = dict(part.split("=") for part in lines[-1].split())
    assert abs(float(checks["onnx_vs_eager_f1"])) < 0.02  # the same network, two runtimes
    assert float(checks["int8_f1_drop"]) == pytest.approx(
        float(timed["onnx"].split("macro F1")[1].split()[0])
        - float(timed["int8"].split("macro F1")[1].split()[0]), abs=1e-3)


def test_bench_review_times_the_session_the_state_and_the_page(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_review.py"), "--suspects", "12",
         "--reference", "4"], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    counts = [int(line.split()[0]) for line in lines if "suspect persons:" in line]
    assert len(counts) == 2 and 0 < counts[0] < counts[1] <= 12, result.stdout
    assert all("/api/state" in line for line in lines[:2])


@pytest.mark.slow
def test_bench_train_times_eager_against_compiled(synthetic_root, tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_train.py"), str(synthetic_root),
         "--size", "64", "48", "--batch-size", "8", "--steps", "6", "--compile"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {line.split()[0]: [float(v) for v in line.split()[1:]]
            for line in result.stdout.splitlines() if line.startswith(("eager", "compiled"))}
    assert set(rows) == {"eager", "compiled"}, result.stdout
    assert rows["compiled"][0] > rows["eager"][0]  # compiling happens in the first steps
    ratio = float(result.stdout.splitlines()[-1].split("=")[1])
    assert ratio == pytest.approx(rows["compiled"][1] / rows["eager"][1], abs=0.01)
