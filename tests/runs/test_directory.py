"""The run directory owns its file names, never reuses a folder, and says what is missing."""


import numpy as np
import pytest

from maskclf.errors import MissingFileError, UsageError
from maskclf.models.spec import resolve_specs
from maskclf.runs.directory import RunDir
from tests.conftest import tiny_config


def test_a_name_in_use_gets_the_next_free_folder(tmp_path):
    first, second = RunDir.create(tmp_path, "x"), RunDir.create(tmp_path, "x")
    assert (first.name, second.name) == ("x", "x-2")
    with pytest.raises(UsageError, match="plain folder name"):
        RunDir.create(tmp_path, "a/b")


def test_config_and_record_round_trip(tmp_path):
    run = RunDir.create(tmp_path, "r")
    cfg = tiny_config("optim.lr=0.02")
    run.write_config(cfg)
    run.write_record({"folds": [0]})
    again = RunDir.open(run.path)
    assert again.read_config() == cfg and again.read_record() == {"folds": [0]}
    assert not again.finished
    with pytest.raises(MissingFileError, match="--resume"):
        again.read_summary()
    with pytest.raises(MissingFileError, match="not a maskclf run directory"):
        RunDir.open(tmp_path / "nothing")


def test_each_network_has_its_own_fold_folders(tmp_path):
    run = RunDir.create(tmp_path, "p")
    specs = resolve_specs(tiny_config("model.head=per_attribute"))
    assert [run.fold(s, 1).path.relative_to(run.path).as_posix() for s in specs] == [
        "mask/fold1", "gender/fold1", "age/fold1"]
    single = resolve_specs(tiny_config())[0]
    assert run.fold(single, 0).path == run.path / "fold0"


def test_a_fold_uses_its_best_checkpoint_else_its_last(tmp_path):
    run = RunDir.create(tmp_path, "c")
    spec = resolve_specs(tiny_config())[0]
    fold = run.fold(spec, 0)
    with pytest.raises(MissingFileError, match="no checkpoint"):
        fold.checkpoint()
    fold.checkpoints.mkdir(parents=True)
    fold.last.write_bytes(b"last")
    assert fold.checkpoint() == fold.last and run.trained_folds(spec) == [0]
    fold.best.write_bytes(b"best")
    assert fold.checkpoint() == fold.best


def test_a_finished_fold_reads_back_its_result(tmp_path):
    run = RunDir.create(tmp_path, "f")
    fold = run.fold(resolve_specs(tiny_config())[0], 2)
    assert fold.load_result() is None
    probs = np.random.default_rng(0).random((5, 18))
    fold.save_result([fold.best], probs)
    checkpoints, loaded = fold.load_result()
    assert checkpoints == [fold.best]
    np.testing.assert_array_equal(loaded, probs)


def test_an_unfinished_run_says_how_to_finish_it_once(tmp_path):
    run = RunDir.create(tmp_path, "half")
    with pytest.raises(UsageError, match=r"half has not finished \(summary.json is missing\): "
                                         r"finish it with `maskclf train --resume .*half`, or "
                                         "pass --allow"):
        run.require_finished("pass --allow")
    (run.path / RunDir.SUMMARY).write_text("{}")
    assert run.require_finished() is run
