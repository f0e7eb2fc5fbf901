"""``manifest.json`` of an export folder: a typed model, because an export is untrusted input.

A folder may come from anywhere (a colleague, a download), so reading it checks every field:
the format, the run's data settings, each network's file (a plain ``.onnx`` name inside the
folder — never a path that leaves it), task, fold, outputs and normalisation, and that the
networks combine into 18 classes (one 18-class task, or the three attributes with the same
folds). Every problem is one :class:`InputFileError` naming the manifest and the field.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from maskclf import labels
from maskclf.atomic import write_json
from maskclf.config import DataConfig
from maskclf.errors import InputFileError, MissingFileError

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 2
"""2 adds each network's activation maps (``cam``); format 1 exports still load."""
READ_FORMATS = (1, 2)
WHOLE_TASKS = ("single", "multihead")
"""Tasks whose network predicts all 18 classes; the others are the attributes."""


def is_export(path: Path | str) -> bool:
    return (Path(path) / MANIFEST).is_file()


class ExportDir:
    """An export folder: every file name in it lives here (as a run's live in ``RunDir``);
    the manifest is written only after it validates, so what is written reads back."""

    MANIFEST = MANIFEST

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    @staticmethod
    def network_name(subdir: str, fold: int) -> str:
        """One network's ONNX file: ``fold<k>.onnx``, or ``<attribute>-fold<k>.onnx``."""
        return f"{subdir + '-' if subdir else ''}fold{fold}.onnx"

    @staticmethod
    def int8_name(fp32_name: str) -> str:
        """The quantized twin of a network's file: ``fold<k>-int8.onnx``."""
        return fp32_name.removesuffix(".onnx") + "-int8.onnx"

    def scratch(self, name: str, role: str) -> Path:
        """A hidden working file beside ``name`` (``.fold0-int8-prepared.onnx``)."""
        return self.file(f".{Path(name).stem}-{role}.onnx")

    def write_manifest(self, manifest: dict) -> None:
        Manifest.model_validate(manifest)  # what is written reads back
        write_json(self.file(MANIFEST), manifest)

    def remove(self, names: list[str]) -> None:
        for name in names:
            self.file(name).unlink(missing_ok=True)


class ManifestNetwork(BaseModel):
    """One ONNX file of the export: a network of one task, trained on one fold."""

    model_config = ConfigDict(extra="forbid")

    file: str
    task: Literal["single", "multihead", "mask", "gender", "age"]
    fold: int = Field(ge=0)
    outputs: list[str]
    mean: list[float] = Field(min_length=3, max_length=3)
    std: list[float] = Field(min_length=3, max_length=3)
    max_abs_difference: float = Field(ge=0)
    cam: list[str] | None = None
    """The maps of the graph's second output, ``attribute/value`` in order (None: none)."""

    @field_validator("file")
    @classmethod
    def _inside_the_folder(cls, value: str) -> str:
        """A plain file name: no folder, no ``..``, not absolute — it cannot leave the
        export folder, whatever the manifest says."""
        if (PurePosixPath(value).name != value or "\\" in value or value in ("", ".", "..")
                or not value.endswith(".onnx")):
            raise ValueError(f"{value!r} must be the name of an .onnx file in the export "
                             "folder (no folders, no '..')")
        return value

    @model_validator(mode="after")
    def _outputs_fit_the_task(self) -> ManifestNetwork:
        expected = (labels.class_names() if self.task in WHOLE_TASKS
                    else list(labels.ATTRIBUTES[self.task]))
        if self.outputs != expected:
            raise ValueError(f"{self.file}: outputs {self.outputs} do not fit task "
                             f"{self.task!r} (expected {expected})")
        attributes = list(labels.ATTRIBUTES) if self.task in WHOLE_TASKS else [self.task]
        maps = [f"{name}/{value}" for name in attributes for value in labels.ATTRIBUTES[name]]
        if self.cam is not None and self.cam != maps:
            raise ValueError(f"{self.file}: cam {self.cam} does not fit task {self.task!r} "
                             f"(expected {maps})")
        return self


class Manifest(BaseModel):
    """What ``maskclf export`` writes; ``extra`` keys are kept for forward-compatible
    reading but every key maskclf uses is checked."""

    model_config = ConfigDict(extra="allow")

    format: Literal[1, 2]
    source_run: str
    head: str
    model: str
    tta: list[str]
    data: DataConfig
    networks: list[ManifestNetwork] = Field(min_length=1)

    @model_validator(mode="after")
    def _networks_combine(self) -> Manifest:
        """One 18-class task, or the three attributes over the same folds; no file twice."""
        files = [network.file for network in self.networks]
        if len(set(files)) != len(files):
            raise ValueError("networks: a file is listed twice")
        folds: dict[str, set[int]] = {}
        for network in self.networks:
            folds.setdefault(network.task, set()).add(network.fold)
        tasks = set(folds)
        whole = tasks <= set(WHOLE_TASKS) and len(tasks) == 1
        attributes = tasks == set(labels.ATTRIBUTES) and len(
            {frozenset(f) for f in folds.values()}) == 1
        if not (whole or attributes):
            raise ValueError(f"networks of tasks {sorted(tasks)} with folds "
                             f"{ {t: sorted(f) for t, f in folds.items()} } do not combine into "
                             "18 classes: one of single / multihead, or mask, gender and age "
                             "over the same folds")
        return self


def _problems(error: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in item['loc']) or 'manifest'}: "
                     f"{item['msg'].removeprefix('Value error, ')}" for item in error.errors())


def read_manifest(folder: Path | str) -> dict[str, Any]:
    """The manifest as written (served as ``GET /model``), once it checks."""
    return load_manifest(folder)[0]


def load_manifest(folder: Path | str) -> tuple[dict[str, Any], Manifest]:
    """The manifest as written and as checked."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise MissingFileError(f"{path} not found: {folder} is not a maskclf export "
                               "(make one with `maskclf export RUN --out DIR`)")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise InputFileError(f"{path} must hold a JSON object, not {type(raw).__name__}")
    if raw.get("format") not in READ_FORMATS:
        raise InputFileError(f"{path} has format {raw.get('format')!r}; this maskclf "
                             f"reads formats {', '.join(map(str, READ_FORMATS))}: export the "
                             "run again")
    try:
        return raw, Manifest.model_validate(raw)
    except ValidationError as exc:
        raise InputFileError(f"{path} is not a usable maskclf manifest: {_problems(exc)}"
                             ) from None
