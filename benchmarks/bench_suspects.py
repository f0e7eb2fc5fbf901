"""How well ``maskclf suspects`` finds photos whose gender and age are not the photo's own.

    python benchmarks/bench_suspects.py CORRECTIONS.yaml [MORE.yaml ...] --data DATA \
        --provenance DATA/train/provenance.csv

For a data set whose provenance file says, per photo (``path`` = person folder, ``file``),
whether its gender/age label holds (``gender_age_status``: ``true_utkface`` and
``estimated_match`` hold, anything else does not), each corrections file (flips or
``--unknown``) is applied to the records the way training applies it, and a photo counts as
*found* when the file changed or made unknown its gender or age. Prints, per file, the
photos found, precision and recall against the photos whose label does not hold, and
``ratio_precision``: precision / the share of such photos among all (what flagging photos
at random would reach). Training never reads the provenance file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from maskclf import labels
from maskclf.data.corrections import apply_corrections, load_corrections
from maskclf.data.layout import read_train

HOLDS = ("true_utkface", "estimated_match")


def found(records: pd.DataFrame, corrections: Path) -> np.ndarray:
    """Per record, whether the corrections changed or made unknown its gender or age."""
    fixed, _ = apply_corrections(records, load_corrections(corrections))
    bits = fixed[labels.UNKNOWN_COLUMN].to_numpy()
    unknown = (bits & (labels.UNKNOWN_BITS["gender"] | labels.UNKNOWN_BITS["age"])) > 0
    changed = ((fixed["gender"] != records["gender"]) | (fixed["age_group"]
                                                         != records["age_group"])).to_numpy()
    return unknown | changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corrections", type=Path, nargs="+")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--provenance", type=Path, required=True)
    args = parser.parse_args()
    records = read_train(args.data)
    provenance = pd.read_csv(args.provenance, dtype=str)
    holds = {f"{row.path}/{Path(row.file).stem}": row.gender_age_status in HOLDS
             for row in provenance.itertuples()}
    keys = records["path"].map(lambda p: f"{Path(p).parent.name}/{Path(p).stem}")
    foreign = ~keys.map(holds).astype(bool).to_numpy()
    base = foreign.mean()
    print(f"{len(records)} photos, {foreign.sum()} whose gender/age is not the photo's own "
          f"({base:.1%})")
    for path in args.corrections:
        hit = found(records, path)
        true = (hit & foreign).sum()
        precision = true / max(hit.sum(), 1)
        recall = true / max(foreign.sum(), 1)
        print(f"{path}: {hit.sum()} photos found, precision {precision:.3f}, recall "
              f"{recall:.3f}, ratio_precision={precision / base:.2f}")


if __name__ == "__main__":
    main()
