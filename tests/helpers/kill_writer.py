"""Write maskclf files in a loop until killed, then check what a kill left behind.

``python -m tests.helpers.kill_writer MODE FOLDER`` writes version after version of one kind
of file with maskclf's own writers, printing ``ready`` after the first; a test kills it with
SIGKILL at a random moment and calls ``check(MODE, FOLDER)``, which raises AssertionError if
a later reader could see a half-written file or a mismatched pair.

Modes: ``csvset`` (predictions.csv + submission.csv, as ``predict`` writes them),
``checkpoint`` (a torch checkpoint, as training writes ``last.ckpt``), ``pack`` (decode-cache
packs and their ``.keys``, as ``build_cache`` writes them).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from maskclf.atomic import atomic_write, write_csv_set
from maskclf.config import DataConfig
from maskclf.data.cache import DecodeCache
from maskclf.labels import CLASS_COLUMNS
from maskclf.models.weights import safe_torch_load
from maskclf.results.submission import prediction_table

IDS = [f"{i:04d}.jpg" for i in range(2000)]  # big enough that a write takes a while
SHAPE = (32, 24, 3)
CACHE_CFG = DataConfig(image_size=SHAPE[:2], cache="disk")


def write_csv_set_version(folder: Path, version: int) -> None:
    probs = np.random.default_rng(version).dirichlet(np.ones(18), size=len(IDS))
    write_csv_set({folder / "predictions.csv": prediction_table(IDS, probs),
                   folder / "submission.csv": pd.DataFrame({"ImageID": IDS,
                                                            "ans": probs.argmax(axis=1)})})


def write_checkpoint_version(folder: Path, version: int) -> None:
    state = {"version": version, "weights": torch.full((512, 512), float(version))}
    atomic_write(folder / "last.ckpt", lambda tmp: torch.save(state, tmp))


def write_pack_version(folder: Path, version: int) -> None:
    keys = [f"v{version}-{i}" for i in range(300)]
    DecodeCache(folder, CACHE_CFG).write_pack(
        keys, lambda row: np.full(SHAPE, version % 251, np.uint8), SHAPE)


WRITERS = {"csvset": write_csv_set_version, "checkpoint": write_checkpoint_version,
           "pack": write_pack_version}


def check(mode: str, folder: Path) -> int:
    """Raise AssertionError if the files in ``folder`` are not whole and consistent; return
    how many complete files a reader finds."""
    folder = Path(folder)
    if mode == "csvset":
        pred, sub = folder / "predictions.csv", folder / "submission.csv"
        if not sub.exists():
            return int(pred.exists())
        assert pred.exists(), "a submission without its predictions"
        probs, answers = pd.read_csv(pred), pd.read_csv(sub)
        assert len(probs) == len(answers) == len(IDS), "a cut-short table"
        assert (probs[CLASS_COLUMNS].to_numpy().argmax(axis=1) == answers["ans"]).all(), \
            "submission.csv from another version than predictions.csv"
        return 2
    if mode == "checkpoint":
        path = folder / "last.ckpt"
        if not path.exists():
            return 0
        state = safe_torch_load(path)
        assert (state["weights"] == state["version"]).all(), "a checkpoint mixing versions"
        return 1
    cache = DecodeCache(folder, CACHE_CFG)
    cache.remove_leftovers(older_than_s=0)  # what the next build does under its lock
    packs = 0
    for pack, keys in _packs(cache).items():
        rows = np.load(cache.dir / pack, mmap_mode="r")
        assert rows.shape == (len(keys), *SHAPE), f"{pack}: rows do not match its keys"
        version = int(keys[0].split("-")[0][1:])
        assert (np.asarray(rows) == version % 251).all(), f"{pack}: rows of another version"
        packs += 1
    assert not list(cache.dir.glob("*.tmp")) and not list(cache.dir.glob(".*.tmp"))
    return packs


def _packs(cache: DecodeCache) -> dict[str, list[str]]:
    return {keys.with_suffix(".npy").name: keys.read_text().split()
            for keys in sorted(cache.dir.glob("pack-*.keys"))}


def main(mode: str, folder: str) -> None:
    write, folder = WRITERS[mode], Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for version in range(10**9):
        write(folder, version)
        if version == 0:
            print("ready", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
