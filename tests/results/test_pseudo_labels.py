import logging

import numpy as np
import pandas as pd

from maskclf.results.pseudo_labels import pseudo_label
from maskclf.results.submission import prediction_table


def test_no_confident_image_says_the_highest_confidence_seen(synthetic_root, tmp_path, caplog):
    ids = pd.read_csv(synthetic_root / "eval" / "info.csv", dtype=str)["ImageID"]
    probs = np.full((len(ids), 18), 0.5 / 17)
    probs[:, 3] = 0.5
    probs[0] = np.full(18, 0.2 / 17)
    probs[0, 7] = 0.8
    prediction_table(ids, probs).to_csv(tmp_path / "p.csv", index=False)
    with caplog.at_level(logging.WARNING, logger="maskclf.results.pseudo_labels"):
        extra = pseudo_label(tmp_path / "p.csv", synthetic_root, 0.9, tmp_path / "out")
    assert len(extra) == 0 and "the most confident is 0.800" in caplog.text
    assert len(pseudo_label(tmp_path / "p.csv", synthetic_root, 0.8, tmp_path / "o2")) == 1
