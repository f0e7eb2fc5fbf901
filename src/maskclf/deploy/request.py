"""What ``maskclf export`` was asked, checked before torch or onnxruntime load.

An :class:`ExportRequest` holds the flags as given; :meth:`ExportRequest.check` answers every
mistake of them in one line before any work (a run that is not finished, a fold choice it
cannot make, unknown TTA views, a data folder that is not here, an ``--out`` that is a file
or a folder of other things, an int8 threshold outside 0-1 or a run without validation rows
to check int8 on), so a refused export writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from maskclf.atomic import check_folder
from maskclf.deploy.manifest import MANIFEST, is_export
from maskclf.errors import UsageError
from maskclf.runs.directory import RunDir
from maskclf.tta import check_views

MAX_F1_DROP = 0.01
"""Largest loss of 18-class macro F1 on the validation rows an int8 export may show."""


@dataclass(frozen=True)
class ExportRequest:
    """The flags of ``maskclf export`` (``tta`` None: the run's own views; ``data`` None:
    the run's data folder)."""

    run: Path
    out: Path
    folds: str = "all"
    opset: int | None = None
    tta: tuple[str, ...] | None = None
    data: Path | None = None
    check_images: int = 16
    int8: bool = False
    max_f1_drop: float = MAX_F1_DROP
    force: bool = False

    def check(self) -> None:
        """Every check of :meth:`checked`, for the CLI to call before the heavy imports."""
        self.checked()

    def checked(self) -> CheckedExport:
        """The request's run, views, folds, data folder and int8 validation rows, each
        checked; a :class:`UsageError` naming the flag otherwise."""
        run = RunDir.open(self.run).require_finished()
        if self.int8 and not 0 <= self.max_f1_drop <= 1:
            raise UsageError(f"--max-f1-drop must be in 0-1; got {self.max_f1_drop:g}")
        oof = (run.require_oof("--int8 (it checks the quantized networks on them)")
               if self.int8 else None)
        cfg = run.read_config()
        views = check_views(cfg.predict.tta if self.tta is None else list(self.tta))
        data_root = run.data_root(self.data)
        if not data_root.is_dir():
            raise UsageError(f"the run's data folder ({data_root}) is not here; pass --data "
                             "DATA (images to verify the export with)")
        _check_out(Path(self.out))
        return CheckedExport(run, views, self._chosen_folds(run), data_root, oof)

    def _chosen_folds(self, run: RunDir) -> list[int] | None:
        """None for every trained fold; for ``best`` the fold with the highest validation
        F1."""
        if self.folds == "all":
            return None
        if self.folds != "best":
            raise UsageError(f"--folds must be 'all' or 'best'; got {self.folds!r}")
        scored = [f for f in run.read_summary().get("folds", [])
                  if f.get("macro_f1") is not None]
        if not scored:
            raise UsageError(f"{run.path} has no fold with a validation score; use --folds all")
        return [max(scored, key=lambda f: f["macro_f1"])["fold"]]


@dataclass(frozen=True)
class CheckedExport:
    """What a checked request resolves to."""

    run: RunDir
    views: list[str]
    folds: list[int] | None
    """None: every trained fold."""
    data_root: Path
    oof: pd.DataFrame | None
    """With ``--int8``: the validation rows the quantized networks are checked on."""


def _check_out(out_dir: Path) -> None:
    """``--out``: a new or empty folder, or an export to replace — never a file, and never
    a folder of other things (the export would mix with them)."""
    check_folder(out_dir, "--out", "the export")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not is_export(out_dir):
        raise UsageError(f"--out {out_dir} is a folder that holds other files and no "
                         f"{MANIFEST}; give a new or empty folder (or an export to replace)")
