"""The GPU benchmark keeps working where no GPU is: a tiny run of two variants on CPU."""

import subprocess
import sys
from pathlib import Path

import pytest

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
