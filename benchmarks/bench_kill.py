"""Interrupt maskclf at many random moments and check that nothing it leaves can mislead.

    python benchmarks/bench_kill.py [--moments 10] [--seed 0]

Run from the repository root (it reuses the test helpers). On a fresh synthetic dataset:

1. SIGKILL the writer loops of ``tests/helpers/kill_writer.py`` (predictions + submission,
   checkpoints, cache packs) at ``--moments`` random moments each: every file a reader
   finds must be whole, and pairs must match.
2. SIGKILL ``maskclf train`` at random moments, then ``maskclf train --resume``: the
   resumed run must end with the uninterrupted run's fold F1s and out-of-fold table.
3. The same with SIGINT (Ctrl+C), whose exit status must be 130.

Prints the failures of each part (all must be 0) and the wall time of an interrupted
plus resumed run against the uninterrupted one (``ratio_resume``).
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from maskclf.data.synthetic import make_synthetic  # noqa: E402
from tests.helpers import kill_writer  # noqa: E402
from tests.helpers.interrupt import (  # noqa: E402
    interrupt_and_resume,
    kill_while_writing,
    maskclf,
    train_args,
)


def writer_kills(work: Path, moments: int, rng: random.Random) -> dict[str, int]:
    failures = {}
    for mode in sorted(kill_writer.WRITERS):
        failures[mode] = 0
        for moment in range(moments):
            try:
                kill_while_writing(mode, work / f"{mode}{moment}", rng.uniform(0.0, 1.5))
            except AssertionError as exc:
                print(f"  {mode} moment {moment}: {exc}")
                failures[mode] += 1
    return failures


def run_kills(data: Path, work: Path, moments: int, rng: random.Random, signum: int,
              expected: dict, oof: pd.DataFrame, duration: float) -> tuple[int, list[float]]:
    failures, seconds = 0, []
    for moment in range(moments):
        delay = rng.uniform(0.0, 0.9 * duration - 4)
        started = time.monotonic()
        status, summary, _ = interrupt_and_resume(data, work, f"{signum}-{moment}", delay,
                                                  signum=signum)
        seconds.append(time.monotonic() - started)
        same = all(abs(a["macro_f1"] - b["macro_f1"]) <= 1e-6
                   for a, b in zip(expected["folds"], summary["folds"], strict=True))
        resumed_oof = pd.read_csv(work / f"{signum}-{moment}" / "oof.csv").filter(like="class_")
        same = same and (resumed_oof - oof).abs().to_numpy().max() <= 1e-5
        allowed = {signal.SIGINT: (130, 0), signal.SIGKILL: (-9, 0)}[signum]
        if not same or status not in allowed:
            print(f"  {signal.Signals(signum).name} at {delay:.1f}s: exit {status}, "
                  f"metrics {'identical' if same else 'DIFFER'}")
            failures += 1
    return failures, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moments", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = make_synthetic(work / "data", persons=12, eval_persons=2, seed=0)
        failures = writer_kills(work / "writers", args.moments, rng)
        print(f"SIGKILL during writes: {args.moments} moments per writer, failures {failures}")

        started = time.monotonic()
        straight = maskclf(*train_args(data, work, "straight"))
        out, err = straight.communicate(timeout=600)
        duration = time.monotonic() - started
        if straight.returncode != 0:
            sys.exit(f"the uninterrupted run failed:\n{err}")
        expected = json.loads(out)
        oof = pd.read_csv(work / "straight" / "oof.csv").filter(like="class_")
        for signum in (signal.SIGKILL, signal.SIGINT):
            failed, seconds = run_kills(data, work, args.moments, rng, signum, expected, oof,
                                        duration)
            print(f"{signal.Signals(signum).name} during training, then --resume: "
                  f"{args.moments} moments, failures {failed}; uninterrupted {duration:.1f}s, "
                  f"interrupted + resumed {sum(seconds) / len(seconds):.1f}s on average, "
                  f"ratio_resume {sum(seconds) / len(seconds) / duration:.2f}")


if __name__ == "__main__":
    main()
