"""The main job on built-in data: synthesise, train, predict, score — one call."""

from __future__ import annotations

import time
from pathlib import Path

from maskclf.config import RunConfig, load_config, packaged_config
from maskclf.data.layout import TRAIN_CSV
from maskclf.data.synthetic import make_synthetic
from maskclf.metrics import score_files
from maskclf.predict.workflows import predict_run
from maskclf.train.execute import train_run


def run_demo(out: Path | str = "maskclf-demo", persons: int = 150, eval_persons: int = 30,
             seed: int = 0, overrides: list[str] | None = None,
             interactive: bool | None = None) -> dict:
    """Generate (or reuse) synthetic data in ``out/data``, train, predict and score.

    The eval labels are known for synthetic data, so the submission is scored too.
    """
    started = time.monotonic()
    out = Path(out)
    data = out / "data"
    if not (data / TRAIN_CSV).is_file():
        make_synthetic(data, persons=persons, eval_persons=eval_persons, seed=seed)
    cfg: RunConfig = load_config(packaged_config("demo"), overrides)
    trained = train_run(cfg, data, out / "runs", "demo", interactive=interactive)
    predicted = predict_run(trained.run, data)
    eval_scores = score_files(predicted.submission, data / "eval" / "labels.csv")
    return {
        "data": str(data),
        "run": str(trained.run),
        "validation": trained.summary["validation"],
        "eval": eval_scores,
        "submission": str(predicted.submission),
        "predictions": str(predicted.predictions),
        "seconds": round(time.monotonic() - started, 1),
    }
