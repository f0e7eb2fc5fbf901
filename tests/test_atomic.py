import os
import stat
import warnings

import numpy as np
import pandas as pd
import pytest

from maskclf import atomic


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("old\n")

    def fail(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic.atomic_write(target, fail)
    assert target.read_text() == "old\n"
    assert list(tmp_path.iterdir()) == [target]


def test_writes_are_flushed_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")),
                                                 real_fsync(fd)))
    target = tmp_path / "x.txt"
    atomic.atomic_write_text(target, "new")
    assert len(synced) == 2
    assert synced[0].endswith(atomic.TMP_SUFFIX) and synced[1] == str(tmp_path)


def test_save_array_closes_its_file_before_the_rename(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)  # an unclosed handle would warn
        atomic.save_array(tmp_path / "a.npy", array)
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), array)


def test_a_crash_within_a_set_leaves_files_missing_never_mismatched(tmp_path, monkeypatch):
    first, second = tmp_path / "predictions.csv", tmp_path / "submission.csv"
    first.write_text("old predictions\n")
    second.write_text("old submission\n")
    real_write = atomic.write_csv
    calls = []

    def crash_on_second(table, path):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_write(table, path)

    monkeypatch.setattr(atomic, "write_csv", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        atomic.write_csv_set({first: pd.DataFrame({"a": [1]}), second: pd.DataFrame({"b": [2]})})
    assert pd.read_csv(first)["a"].tolist() == [1]
    assert not second.exists()  # not the old submission beside the new predictions


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_get_the_mode_the_umask_gives(tmp_path, umask, mode):
    import torch

    previous = os.umask(umask)
    try:
        atomic.write_csv(pd.DataFrame({"a": [1]}), tmp_path / "table.csv")
        atomic.write_json(tmp_path / "run.json", {"a": 1})
        atomic.save_array(tmp_path / "probs.npy", np.zeros(3))
        atomic.atomic_write(tmp_path / "model.ckpt", lambda tmp: torch.save({"w": 1}, tmp))
    finally:
        os.umask(previous)
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in tmp_path.iterdir()}
    assert modes == dict.fromkeys(["table.csv", "run.json", "probs.npy", "model.ckpt"], mode)


def test_a_crash_between_removals_never_leaves_the_last_file_alone(tmp_path, monkeypatch):
    """The submission is removed before its predictions: a kill between the two removals
    leaves the old pair's predictions, never a submission without them."""
    first, last = tmp_path / "predictions.csv", tmp_path / "submission.csv"
    atomic.write_csv_set({first: pd.DataFrame({"a": [1]}), last: pd.DataFrame({"b": [1]})})
    real_unlink = type(first).unlink

    def killed_after_one(self, missing_ok=False):
        real_unlink(self, missing_ok=missing_ok)
        raise KeyboardInterrupt  # the process dies here

    monkeypatch.setattr(type(first), "unlink", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        atomic.write_csv_set({first: pd.DataFrame({"a": [2]}), last: pd.DataFrame({"b": [2]})})
    assert first.exists() and not last.exists()
