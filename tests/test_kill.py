"""Kill tests: SIGKILL while maskclf writes leaves no half-written or mismatched file, and
``--resume`` after SIGINT at a random moment ends with the metrics of an uninterrupted run.

``benchmarks/bench_kill.py`` runs the same checks at many more moments, and on real runs.
"""

from __future__ import annotations

import json
import os
import random
import time

import pandas as pd
import pytest

from tests.helpers import kill_writer
from tests.helpers.interrupt import interrupt_and_resume, kill_while_writing, maskclf, train_args


@pytest.mark.parametrize("mode", sorted(kill_writer.WRITERS))
def test_sigkill_while_writing_leaves_whole_files(mode, tmp_path):
    delay = random.Random(mode).uniform(0.05, 0.6)
    kill_while_writing(mode, tmp_path, delay)  # raises if a reader could see a broken file


@pytest.mark.slow
def test_resume_after_sigint_at_random_moments_matches_an_uninterrupted_run(synthetic_root,
                                                                             tmp_path):
    straight = maskclf(*train_args(synthetic_root, tmp_path, "straight"))
    started = time.monotonic()
    out, err = straight.communicate(timeout=300)
    duration = time.monotonic() - started
    assert straight.returncode == 0, err
    expected = json.loads(out)
    oof = pd.read_csv(tmp_path / "straight" / "oof.csv").filter(like="class_")
    rng = random.Random(0)
    for point in range(2):
        delay = rng.uniform(0.0, 0.8 * duration - 4)  # after the imports, before the end
        status, summary, err = interrupt_and_resume(synthetic_root, tmp_path, f"cut{point}",
                                                    delay)
        assert status in (130, 0), f"SIGINT at {delay:.1f}s: exit {status}\n{err}"
        for a, b in zip(expected["folds"], summary["folds"], strict=True):
            assert a["macro_f1"] == pytest.approx(b["macro_f1"], abs=1e-6), f"at {delay:.1f}s"
        resumed_oof = pd.read_csv(tmp_path / f"cut{point}" / "oof.csv").filter(like="class_")
        pd.testing.assert_frame_equal(oof, resumed_oof, atol=1e-5)


def test_the_checks_catch_what_they_guard(tmp_path):
    """The checks are not vacuous: a mismatched pair and a cut pack are caught."""
    kill_writer.write_csv_set_version(tmp_path, 1)
    (tmp_path / "keep.csv").write_text((tmp_path / "submission.csv").read_text())
    kill_writer.write_csv_set_version(tmp_path, 2)
    os.replace(tmp_path / "keep.csv", tmp_path / "submission.csv")
    with pytest.raises(AssertionError, match="another version"):
        kill_writer.check("csvset", tmp_path)
    packs = tmp_path / "packs"
    kill_writer.write_pack_version(packs, 3)
    keys = next(packs.rglob("pack-*.keys"))
    keys.write_text("\n".join(keys.read_text().split()[:-5]))
    with pytest.raises(AssertionError, match="rows do not match"):
        kill_writer.check("pack", packs)
