"""maskclf from Python: a run as an object, over the same workflows the CLI calls.

>>> import maskclf  # doctest: +SKIP
>>> run = maskclf.Run.train("cpu", data="data", overrides={"train.epochs": 3})  # doctest: +SKIP
>>> run.scores["macro_f1"], run.oof.shape  # doctest: +SKIP
>>> run.predict()  # eval/images in info.csv order, as a DataFrame  # doctest: +SKIP

Every check the CLI makes happens here too, before any work, and a problem is one of
maskclf's exceptions (``maskclf.errors``: a ``ConfigError`` naming a mistyped key, a
``MissingFileError`` naming a missing data folder), never ``SystemExit``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import yaml

from maskclf.errors import MissingFileError
from maskclf.runs.directory import RunDir


def as_overrides(overrides: Mapping | Sequence[str] | None) -> tuple[str, ...]:
    """``-o`` strings from ``{"train.epochs": 3}`` or ``{"train": {"epochs": 3}}`` (values
    written as YAML, as the command line reads them), or the strings themselves."""
    if overrides is None:
        return ()
    if not isinstance(overrides, Mapping):
        return tuple(str(item) for item in overrides)
    flat: list[str] = []

    def walk(prefix: str, value) -> None:
        if isinstance(value, Mapping) and value:
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        else:
            text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
            flat.append(f"{prefix}={text.removesuffix('...').strip()}")

    walk("", overrides)
    return tuple(flat)


class Run:
    """A run directory: its results as objects, and what can be done with it."""

    def __init__(self, path: Path | str):
        self.dir = RunDir.open(path)

    @property
    def path(self) -> Path:
        return self.dir.path

    def __repr__(self) -> str:
        scores = self.scores
        shown = f", OOF macro F1 {scores['macro_f1']:.4f}" if scores else ""
        return f"Run({str(self.path)!r}{shown})"

    @classmethod
    def train(cls, config: Path | str | Mapping | None = None, data: Path | str = "data",
              overrides: Mapping | Sequence[str] | None = None, out: Path | str = "runs",
              name: str | None = None, fold: int | None = None) -> Run:
        """Train a new run, as ``maskclf train``: ``config`` a YAML file, a packaged
        recipe's name (``maskclf recipes``) or a dict in the YAML's shape; ``overrides`` a
        dict of dotted keys (or nested dicts) or ``key=value`` strings."""
        from maskclf.train.execute import train
        from maskclf.train.request import TrainRequest

        if isinstance(config, Mapping):  # read as a file would be: the same checks
            with tempfile.TemporaryDirectory(prefix="maskclf-") as folder:
                written = Path(folder) / "config.yaml"
                written.write_text(yaml.safe_dump(dict(config), sort_keys=False))
                return cls.train(written, data, overrides, out, name, fold)
        request = TrainRequest(None if config is None else Path(config),
                               as_overrides(overrides), Path(data), Path(out), name, fold)
        request.check()
        return cls(train(request, interactive=None).run)

    def resume(self, data: Path | str | None = None) -> Run:
        """Finish this run if it was interrupted (its own config, folds and data)."""
        from maskclf.train.execute import train
        from maskclf.train.request import TrainRequest

        request = TrainRequest(data=None if data is None else Path(data), resume=self.path)
        request.check()
        train(request)
        return self

    @property
    def summary(self) -> dict:
        """``summary.json``: validation scores with their intervals, folds, timings."""
        return self.dir.require_finished().read_summary()

    @property
    def scores(self) -> dict | None:
        """The out-of-fold scores (None: trained without validation or not finished)."""
        return self.dir.read_summary().get("validation") if self.dir.finished else None

    @property
    def oof(self) -> pd.DataFrame:
        """The out-of-fold rows: ``ImageID``, 18 class probabilities, ``fold``, ``class``,
        ``person``."""
        return self.dir.require_oof("Run.oof")

    @property
    def config(self):
        """The run's resolved config (``maskclf.config.RunConfig``)."""
        return self.dir.read_config()

    def predict(self, data: Path | str | None = None, images: Sequence[str] | None = None,
                tta: Sequence[str] | None = None) -> pd.DataFrame:
        """Probabilities and labels: of ``eval/images`` in ``info.csv`` order (also written
        as the run's ``predictions.csv`` and validated ``submission.csv``), or of
        ``images`` (files, folders, globs: one row per file)."""
        return _predict(self.path, data, images, tta)

    def export(self, out: Path | str, int8: bool = False) -> Export:
        """The run's networks as ONNX in ``out`` (``maskclf export``)."""
        from maskclf.deploy.export import export_run
        from maskclf.deploy.request import ExportRequest

        request = ExportRequest(self.path, Path(out), int8=int8)
        request.check()
        export_run(request)
        return Export(out)

    def report(self, data: Path | str | None = None) -> Path:
        """(Re)draw the run's report; returns ``report.md``."""
        from maskclf.reports.run_report import write_report

        return Path(write_report(self.path, data)["report"])


class Export:
    """An export folder (``maskclf export``): ONNX networks that predict without torch."""

    def __init__(self, path: Path | str):
        from maskclf.deploy.manifest import is_export

        if not is_export(Path(path)):
            raise MissingFileError(f"{path} is not an export folder (no manifest.json); "
                                   "make one with Run.export or `maskclf export`")
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Export({str(self.path)!r})"

    def predict(self, data: Path | str = "data", images: Sequence[str] | None = None
                ) -> pd.DataFrame:
        """As :meth:`Run.predict`, on onnxruntime."""
        return _predict(self.path, data, images, None)


def _predict(source: Path, data, images, tta) -> pd.DataFrame:
    from maskclf.predict.workflows import predict_images, predict_run

    views = None if tta is None else list(tta)
    if images is not None:
        result = predict_images(source, [str(i) for i in images], tta=views)
        return pd.read_csv(result["predictions"])
    return pd.read_csv(predict_run(source, data, views).predictions)


def run_auto(data: Path | str, budget: str, preset: str = "cpu", out: Path | str = "auto",
             name: str | None = None, external: Sequence[Path | str] = ()) -> dict:
    """``maskclf auto``: spend ``budget`` (``"2h"``, ``"90m"``) on the best submission;
    returns the study's summary (``OUT/NAME/summary.json``)."""
    from maskclf.auto.request import AutoRequest
    from maskclf.auto.workflow import run_auto as spend

    request = AutoRequest(Path(data), budget, preset, Path(out), name,
                          external=tuple(Path(e) for e in external))
    request.check()
    return spend(request)


def compare(*inputs: Run | Path | str, labels: Path | str | None = None,
            draws: int = 1000) -> dict:
    """``maskclf compare``: each input (a run, an OOF or prediction file) against the first,
    paired over persons; the same dict ``--json`` prints."""
    from maskclf.results.compare import compare as paired

    paths = [item.path if isinstance(item, Run) else Path(item) for item in inputs]
    return paired(paths, None if labels is None else Path(labels), draws=draws)
