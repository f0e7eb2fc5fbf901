"""Opt-in corrections of known mislabeled persons, applied to the records table in memory.

The file format (YAML; see ``resources/corrections.yaml``, shipped and versioned with the
package) lists folder ids under ``mask_swapped``, ``gender_wrong``, ``age_under_30`` and
``age_60_or_over``. Ids absent from the data are reported as notes, never as errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

import pandas as pd
import yaml

from maskclf import labels
from maskclf.errors import InputFileError
from maskclf.tables import require_file

KINDS = ("mask_swapped", "gender_wrong", "age_under_30", "age_60_or_over")


def packaged_corrections() -> Path:
    return Path(str(files("maskclf") / "resources" / "corrections.yaml"))


@dataclass
class CorrectionReport:
    """What changed: one row per changed image, and the ids that matched nothing."""

    changes: pd.DataFrame
    absent: list[str] = field(default_factory=list)

    def summary(self) -> str:
        persons = self.changes["person"].nunique() if len(self.changes) else 0
        text = f"label corrections: {len(self.changes)} image label(s) of {persons} person(s)"
        if self.absent:
            text += f"; ids not in this data (ignored): {', '.join(self.absent)}"
        return text


def load_corrections(path: Path | str | None = None) -> dict[str, list[str]]:
    """Read a corrections file (the packaged one when ``path`` is None)."""
    path = require_file(path if path is not None else packaged_corrections(),
                        "corrections file")
    try:
        raw = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputFileError(f"corrections file {path} is not plain YAML: "
                             f"{' '.join(str(exc).split())}") from None
    if not isinstance(raw, dict):
        raise InputFileError(f"corrections file {path} must map sections {list(KINDS)} to "
                             f"lists of ids, not hold a {type(raw).__name__}")
    unknown = set(raw) - set(KINDS) - {"version"}
    if unknown:
        raise InputFileError(f"corrections file {path}: unknown section(s) {sorted(unknown)}; "
                         f"expected {list(KINDS)}")
    return {kind: [str(i) for i in raw.get(kind) or []] for kind in KINDS}


def apply_corrections(records: pd.DataFrame, corrections: dict[str, list[str]]
                      ) -> tuple[pd.DataFrame, CorrectionReport]:
    """A corrected copy of ``records`` (``age`` keeps the folder's years) and a report."""
    fixed = records.copy()
    ids = set(fixed["id"])
    for kind, targets in corrections.items():
        rows = fixed["id"].isin(targets)
        if kind == "mask_swapped":
            fixed.loc[rows, "mask"] = fixed.loc[rows, "mask"].map({0: 0, 1: 2, 2: 1})
        elif kind == "gender_wrong":
            fixed.loc[rows, "gender"] = 1 - fixed.loc[rows, "gender"]
        elif kind == "age_under_30":
            fixed.loc[rows, "age_group"] = 0
        elif kind == "age_60_or_over":
            fixed.loc[rows, "age_group"] = 2
    fixed["class"] = labels.encode_class(fixed["mask"], fixed["gender"], fixed["age_group"])
    changed = fixed["class"] != records["class"]
    changes = pd.DataFrame({"path": records.loc[changed, "path"],
                            "person": records.loc[changed, "person"],
                            "old_class": records.loc[changed, "class"],
                            "new_class": fixed.loc[changed, "class"]})
    absent = sorted({i for targets in corrections.values() for i in targets} - ids)
    return fixed, CorrectionReport(changes.reset_index(drop=True), absent)
