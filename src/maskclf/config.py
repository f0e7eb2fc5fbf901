"""The run configuration: a pydantic schema, YAML loading and dotted overrides.

Precedence: ``-o key=value`` overrides > YAML file > the defaults below. Unknown keys and
wrong types are errors that name the key, so a typo fails before any training starts.
"""

from __future__ import annotations

import difflib
import logging
import re
import typing
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from maskclf.errors import ConfigError
from maskclf.labels import ATTRIBUTES, NUM_CLASSES
from maskclf.registry import FACE_DETECTORS, LOSSES, TASKS, VIEWS

log = logging.getLogger(__name__)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, None: 1}


def duration_seconds(text: str | float | int) -> float:
    """``20m``, ``1.5h``, ``90s`` or a number of seconds, as seconds (> 0)."""
    found = _DURATION.match(str(text))
    if found is None:
        raise ValueError(f"{text!r} is not a duration: write e.g. 90s, 20m or 1.5h")
    if float(found.group(1)) <= 0:
        raise ValueError(f"{text!r} is no time at all: give a duration above zero, e.g. 90s, "
                         "20m or 1.5h")
    return float(found.group(1)) * _UNIT_SECONDS[found.group(2)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ExternalSource(_Section):
    """An outside photo set (``data.external``): ``images/`` and ``labels.csv`` (``file`` and
    any of ``mask``, ``gender``, ``age`` in years; a blank cell is unknown). Its rows train
    every head on exactly the attributes they know, and never validate. A bare path is a
    source with the defaults."""

    path: Path
    share: float | None = Field(None, gt=0.0, lt=1.0)
    """The part of each training epoch drawn from this source (0.3: 30 % of the epoch's
    images, drawn anew each epoch); None: every row once an epoch."""
    weight: float = Field(1.0, gt=0.0, le=10.0)
    """Its rows' loss weight against the competition's (1.0: the same)."""
    mask: Literal["wear", "incorrect", "not_wear"] | None = None
    """A mask status every image of the folder shares (its labels.csv may omit it)."""
    gender: Literal["male", "female"] | None = None
    age: int | None = Field(None, ge=0, le=120)
    """An age in years every image of the folder shares."""

    @model_validator(mode="before")
    @classmethod
    def _bare_path(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str | Path) else value

    def shared(self) -> dict[str, str | int]:
        """The folder-wide values given, by attribute."""
        return {name: value for name in ("mask", "gender", "age")
                if (value := getattr(self, name)) is not None}


class DataConfig(_Section):
    image_size: tuple[int, int] = (256, 192)
    """Network input size as [height, width]."""
    crop: Literal["none", "center", "face"] = "center"
    """``center`` keeps the central ``crop_fraction`` of each image, where the face is;
    ``face`` crops around the detected face (centre crop when none is found)."""
    face_detector: str = "mtcnn"
    """For ``face``: ``mtcnn`` finds masked faces (``pip install 'maskclf[faces]'``);
    ``haar`` is OpenCV's bundled cascade (always installed, blind to most masked faces)."""
    crop_fraction: float = Field(0.8, gt=0.0, le=1.0)
    face_margin: float = Field(0.4, ge=0.0, le=2.0)
    """For ``face``: grow the detected box by this share of its size on every side."""
    crop_margin: float = Field(0.0, ge=0.0, le=0.5)
    """Preprocess (and cache) at ``image_size * (1 + crop_margin)``; training then takes a
    random ``image_size`` crop of it, validation and prediction the centre."""
    val_ratio: float = Field(0.2, ge=0.0, lt=1.0)
    """Share of persons held out for validation (0 trains on everyone); unused when folds >= 2."""
    folds: int = Field(0, ge=0)
    """K >= 2: person-level stratified K-fold, every fold trained; 0: one split by val_ratio."""
    split_seed: int | None = None
    """Seed of the person split; None: the run's ``seed``. ``maskclf ablate`` fixes it, so
    runs with different seeds validate on the same persons and compare paired."""
    corrections: bool | Path = False
    """Fix mislabeled persons and photos in memory, or make a label unknown (it trains and
    scores as an outside row's unknown attribute): true (the packaged list) or a file
    (``maskclf suspects``, ``maskclf review``)."""
    age_old_threshold: int = Field(60, ge=31, le=60)
    """Training labels only: ages from this value count as ">=60" (scores keep 60)."""
    exclude_ages: list[tuple[int, int]] = []
    """Inclusive [low, high] age ranges whose persons are left out of training only (never of
    validation or scores): the ages next to a class boundary, e.g. [[27, 29], [57, 59]]."""
    sampler: Literal["none", "balanced"] = "none"
    sampler_by: Literal["class", "mask", "gender", "age"] = "class"
    """What ``balanced`` equalises: the 18 classes or one attribute."""
    oversample: dict[int, float] = {}
    """Class id -> repeat factor (>= 1) for minority classes in training."""
    extra: list[Path] = []
    """Folders written by ``maskclf pseudo-label``: their images join training, never validation."""
    external: list[ExternalSource] = []
    """Outside photo sets that label only some attributes (see :class:`ExternalSource`):
    training rows only, never validation, folds, scores or decision tuning."""
    num_workers: int | Literal["auto"] = "auto"
    """Loader processes for augmented training batches; ``auto``: one per CPU core, up to 8."""
    cache: Literal["auto", "disk", "memory", "none"] = "auto"
    """``disk``: decode-once cache (memory-mapped packs of images); ``auto``: disk when it fits
    ``cache_max_gb`` and half the free disk; ``memory``: RAM of each loader process."""
    cache_dir: Path | None = None
    """Where the disk cache lives (default: DATA/.maskclf-cache)."""
    cache_max_gb: float = Field(20.0, gt=0.0)

    @field_validator("folds")
    @classmethod
    def _folds_not_one(cls, value: int) -> int:
        if value == 1:
            raise ValueError("data.folds must be 0 (one split by val_ratio) or >= 2; got 1")
        return value

    @field_validator("exclude_ages")
    @classmethod
    def _age_ranges(cls, value: list[tuple[int, int]]) -> list[tuple[int, int]]:
        bad = [list(r) for r in value if not 0 <= r[0] <= r[1]]
        if bad:
            raise ValueError(f"data.exclude_ages holds [low, high] ranges with 0 <= low <= high; "
                             f"got {bad}")
        return value

    @field_validator("oversample")
    @classmethod
    def _oversample_classes(cls, value: dict[int, float]) -> dict[int, float]:
        bad = {k: v for k, v in value.items() if not 0 <= k < NUM_CLASSES or v < 1}
        if bad:
            raise ValueError(f"data.oversample maps class ids 0-17 to factors >= 1; got {bad}")
        return value

    @property
    def validates(self) -> bool:
        """Whether runs of this config hold persons out to validate on (k folds, or a
        held-out share): what early stopping, plateau schedules, soups and studies need."""
        return self.val_ratio > 0 or self.folds >= 2


class ModelConfig(_Section):
    name: str = "efficientnet_b0"
    """Any timm model name."""
    pretrained: bool = False
    """Download weights from timm's hub (needs network); see ``weights`` for offline use."""
    weights: Path | None = None
    """A local weights file (.pth/.bin/.safetensors) for the backbone; the head is new."""
    drop_rate: float = Field(0.0, ge=0.0, lt=1.0)
    drop_path_rate: float | None = Field(None, ge=0.0, lt=1.0)
    head: str = "single"
    """single: one 18-way head; multihead: shared backbone, mask/gender/age heads;
    per_attribute: three models, one per attribute (see ``per_attribute``)."""
    freeze_epochs: int = Field(0, ge=0)
    """Train only the head for this many epochs first."""
    freeze_stages: int = Field(0, ge=0)
    """Freeze the first N of timm's feature stages (``net.feature_info``) and everything before
    them (the stem) for the whole run, BatchNorm statistics included."""
    age_regression_weight: float = Field(0.0, ge=0.0)
    """Multi-head only: weight of an auxiliary L1 head on the age in years (divided by 100);
    it shapes the shared features and is not used for prediction."""
    outside_batchnorm: Literal["shared", "split"] = "shared"
    """With ``data.external``: ``split`` makes every training batch half competition rows,
    half outside rows, and gives the outside half BatchNorm statistics of its own (timm's
    split BatchNorm), so other cameras and crops do not shift the statistics inference
    uses; ``shared``: one set of statistics for every row."""


class LossConfig(_Section):
    name: str | dict[str, float] = "cross_entropy"
    """cross_entropy | focal | label_smoothing | soft_f1, or a weighted sum {name: weight}."""
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    """Smoothing eps (``label_smoothing`` uses 0.1 when this is 0)."""
    gamma: float = Field(2.0, ge=0.0)
    alpha: float = Field(1.0, gt=0.0)
    class_weights: Literal["none", "inverse", "effective"] = "none"
    effective_beta: float = Field(0.999, gt=0.0, lt=1.0)
    age_ordinal_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    """Move this share of each label's mass to the adjacent age group only (<30 <-> 30-59 <->
    >=60), for every head; mask and gender labels are untouched."""


class MultiLossConfig(LossConfig):
    """The loss of a run; ``attributes`` gives each attribute of a multi-head model its own."""

    attributes: dict[Literal["mask", "gender", "age"], LossConfig] = {}
    attribute_weights: dict[Literal["mask", "gender", "age"], float] = {
        "mask": 1.0, "gender": 1.0, "age": 1.0}


class OptimConfig(_Section):
    name: str = "adamw"
    """Any optimizer timm's ``create_optimizer_v2`` knows (adamw, sgd, lamb, lion, adan...);
    checked by ``preflight``. ``sgd`` uses ``momentum`` and ``nesterov``."""
    lr: Annotated[float, Field(gt=0.0)] | Literal["auto"] = 1e-3
    """A rate, or ``auto``: Lightning's learning-rate range test (``maskclf lr-find``) runs
    on the first fold's training rows before training, and the rate it suggests replaces
    ``auto`` in the run's config.yaml (run.json records the test, the report shows it)."""
    weight_decay: float = Field(0.01, ge=0.0)
    """Not applied to norms and biases (timm's optimizer factory)."""
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = True
    layer_decay: float | None = Field(None, gt=0.0, le=1.0)
    """Layer-wise learning-rate decay (timm): each earlier block's lr is this times the next
    one's, so pretrained early layers move less when fine-tuning."""


class SchedConfig(_Section):
    name: Literal["none", "cosine", "step", "plateau"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0.0)
    step_epochs: int = Field(10, ge=1)
    """For ``step``: multiply the learning rate by ``gamma`` every ``step_epochs``."""
    gamma: float = Field(0.1, gt=0.0, le=1.0)
    min_lr_ratio: float = Field(0.01, ge=0.0, le=1.0)
    """For ``cosine``: the final learning rate as a share of ``optim.lr``."""
    patience: int = Field(2, ge=0)
    """For ``plateau``: epochs without a better validation macro F1 before lr *= gamma."""


class AugConfig(_Section):
    pipeline: Path | None = None
    """An albumentations pipeline saved as YAML or JSON (``A.save``), or the name of a preset
    in ``configs/aug/`` (``light``, ``strong``); it replaces hflip / shift_scale_rotate /
    color_jitter and is seeded like them."""
    hflip: float = Field(0.5, ge=0.0, le=1.0)
    shift_scale_rotate: float = Field(0.5, ge=0.0, le=1.0)
    color_jitter: float = Field(0.5, ge=0.0, le=1.0)
    mixup_alpha: float = Field(0.0, ge=0.0)
    cutmix_alpha: float = Field(0.0, ge=0.0)
    mix_prob: float = Field(1.0, ge=0.0, le=1.0)
    """Probability of mixing a batch when mixup or cutmix is on."""
    switch_prob: float = Field(0.5, ge=0.0, le=1.0)
    """With both on: probability of cutmix instead of mixup."""
    mix_off_epoch: int = Field(0, ge=0)
    """Stop mixing from this epoch on (0: never stop)."""
    cutmix_mode: Literal["box", "vertical_half"] = "box"
    """``box``: timm's random-box CutMix (``cutmix_alpha``); ``vertical_half``: the left part
    of one face joined to the right part of another (cut at ``half_lambda`` of the width), on
    a share ``mix_prob`` of the batches."""
    cutmix_within_class: bool = False
    """``vertical_half`` only: pair each image with one of its own class in the batch."""
    half_lambda: tuple[float, float] = (0.4, 0.6)
    """``vertical_half``: the cut's position as a share of the width, drawn in this range."""

    @field_validator("half_lambda")
    @classmethod
    def _lambda_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 < value[0] <= value[1] < 1.0:
            raise ValueError(f"aug.half_lambda must be [low, high] with 0 < low <= high < 1; "
                             f"got {list(value)}")
        return value


class TrainConfig(_Section):
    epochs: int = Field(10, ge=1)
    early_stopping_patience: int | None = Field(None, ge=1)
    """Stop a fold after this many epochs without a better validation macro F1 (Lightning's
    EarlyStopping); the best checkpoint is kept. None: every epoch runs."""
    average_checkpoints: int = Field(0, ge=0)
    """K >= 2: keep each fold's K best epochs and average their weights (a model soup, kept
    only when it scores at least as well as the best epoch); 0 or 1: off."""
    average_mode: Literal["uniform", "greedy"] = "uniform"
    """``uniform``: all K; ``greedy``: best first, each added only while validation F1 does
    not drop."""
    time_limit: str | None = None
    """Wall time for the whole run (every fold and network), e.g. ``20m``, ``1.5h``, ``90s``:
    once the first epoch is timed, each fold trains the epochs that fit its share, with the
    learning-rate schedule planned for them, and ends like a finished run."""
    batch_size: int = Field(32, ge=1)
    precision: Literal["32", "16-mixed", "bf16-mixed"] = "32"
    accelerator: str = "auto"
    devices: int | Literal["auto"] = "auto"
    """Devices (processes) per node; more than one trains with DDP, one process per device."""
    num_nodes: int = Field(1, ge=1)
    strategy: str = "auto"
    """Lightning strategy: ``auto`` (DDP when devices x nodes > 1), ``ddp``, or any Lightning
    strategy name; spawn-style strategies are refused (see ``_launched_strategy``)."""
    ddp_timeout_s: int = Field(1800, ge=10)
    """How long a rank waits for the others at a collective before failing (a dead rank)."""
    channels_last: bool = True
    compile: bool = False
    accumulate: int = Field(1, ge=1)
    grad_clip: float | None = Field(None, gt=0.0)
    ema: bool = False
    ema_decay: float = Field(0.999, gt=0.0, lt=1.0)
    log_every_n_steps: int = Field(10, ge=1)
    deterministic: bool = False
    """Ask torch for deterministic algorithms (slower on GPU; CPU runs repeat without it)."""
    report: bool = True
    """Write RUN/report/ (curves, confusion matrices, per-class F1, mistakes) at the end."""
    wandb_project: str | None = None
    """Also log to Weights & Biases under this project (needs ``pip install wandb``; checked
    before training by ``preflight``, so a saved config loads on machines without it)."""

    @field_validator("time_limit", mode="before")
    @classmethod
    def _a_duration(cls, value: Any) -> str | None:
        """A duration; a bare number (``-o train.time_limit=90``) counts seconds."""
        if value is None:
            return None
        duration_seconds(value)
        return str(value)

    @property
    def time_limit_s(self) -> float | None:
        return None if self.time_limit is None else duration_seconds(self.time_limit)

    @field_validator("devices")
    @classmethod
    def _positive_devices(cls, value: int | str) -> int | str:
        if value != "auto" and value < 1:
            raise ValueError(f"train.devices must be >= 1 or auto; got {value}")
        return value

    @field_validator("strategy")
    @classmethod
    def _launched_strategy(cls, value: str) -> str:
        if "spawn" in value or value in {"ddp_fork", "ddp_notebook"}:
            raise ValueError(
                f"train.strategy {value!r} starts the ranks from inside one process, which then "
                "alone continues the run; maskclf runs its whole pipeline on every rank, so use "
                "ddp (Lightning re-runs the command once per device), torchrun or srun")
        return value

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value

    @property
    def several_devices(self) -> bool:
        """Whether a run spans several processes (devices or nodes): DDP, one rank each."""
        return (isinstance(self.devices, int) and self.devices > 1) or self.num_nodes > 1


class PredictConfig(_Section):
    tta: list[str] = []
    """Test-time views averaged with the plain image: hflip, scale, shift."""
    tune_decisions: bool = False
    """Apply the run's per-class decision biases (``maskclf tune-decisions``) at predict time."""
    person_vote: bool = False
    """Group eval images into persons and replace gender and age by each person's vote, when
    the same vote on the out-of-fold rows proves itself (``maskclf.results.person_vote``)."""
    person_size: int = Field(7, ge=2)
    """Images per person in the eval set (7 in the competition)."""
    person_min_purity: float = Field(0.8, gt=0.0, le=1.0)
    """Out-of-fold grouping purity the vote needs before it is applied."""

    @field_validator("tta")
    @classmethod
    def _known_views(cls, value: list[str]) -> list[str]:
        for name in value:
            if problem := VIEWS.problem(name):
                raise ValueError(problem)
        return value


class DistillConfig(_Section):
    """Knowledge distillation: train on a teacher's soft targets mixed with the true labels
    (Hinton et al., 2015); ``maskclf distill`` writes the teacher file and this section."""

    teacher: Path | None = None
    """A prediction file (``ImageID`` = the training image's path, as in a run's oof.csv)
    holding the teacher's probabilities of every image this run trains on; None: off."""
    alpha: float = Field(0.7, ge=0.0, le=1.0)
    """Weight of the teacher's soft targets; ``1 - alpha`` goes to the true-label loss."""
    temperature: float = Field(2.0, gt=0.0)
    """Softens teacher and student alike; the soft term is scaled by temperature squared so
    its gradients keep their size."""


ATTRIBUTE_SECTIONS = ("data", "model", "loss", "optim", "sched", "aug", "train")


class RunConfig(_Section):
    seed: int = 42
    """Seeds the weights, augmentation, epoch order and (without ``data.split_seed``) the
    person split."""
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    loss: MultiLossConfig = MultiLossConfig()
    optim: OptimConfig = OptimConfig()
    sched: SchedConfig = SchedConfig()
    aug: AugConfig = AugConfig()
    train: TrainConfig = TrainConfig()
    predict: PredictConfig = PredictConfig()
    distill: DistillConfig = DistillConfig()
    per_attribute: dict[Literal["mask", "gender", "age"], dict[str, dict[str, Any]]] = {}
    """For ``model.head: per_attribute``: overrides of any section per attribute, e.g.
    ``{age: {model: {name: resnet34}, train: {epochs: 20}}}``."""

    @property
    def split_seed(self) -> int:
        """The person split's seed: ``data.split_seed``, else ``seed``."""
        return self.seed if self.data.split_seed is None else self.data.split_seed

    @field_validator("per_attribute")
    @classmethod
    def _known_sections(cls, value: dict) -> dict:
        for attribute, sections in value.items():
            unknown = set(sections) - set(ATTRIBUTE_SECTIONS)
            if unknown:
                raise ValueError(f"per_attribute.{attribute}: unknown section(s) "
                                 f"{sorted(unknown)}; allowed {list(ATTRIBUTE_SECTIONS)}")
        return value

    def partial_row_clashes(self) -> list[tuple[str, str]]:
        """(setting, why) of each setting that cannot read a row that knows only some
        attributes (outside data, a label ``data.corrections`` makes unknown)."""
        mixing = self.aug.mixup_alpha > 0 or self.aug.cutmix_alpha > 0
        refused = [
            ("aug.mixup_alpha / aug.cutmix_alpha", mixing or self.aug.cutmix_mode != "box",
             "mixing blends one row's unknown attributes into another's known ones; set them "
             "to 0 and aug.cutmix_mode to box"),
            ("distill.teacher", self.distill.teacher is not None,
             "a teacher's soft targets claim every attribute of every row"),
            ("loss.age_ordinal_smoothing", self.loss.age_ordinal_smoothing > 0,
             "age smoothing moves the mass of 18-class targets, which outside rows do not have; "
             "set it to 0"),
            ("data.sampler: balanced", self.data.sampler == "balanced",
             "balanced draws need each row's class; use the sources' share instead"),
        ]
        return [(setting, why) for setting, clash, why in refused if clash]

    def _check_external(self) -> None:
        for setting, why in self.partial_row_clashes()[:1]:
            raise ValueError(f"data.external with {setting}: {why}")
        shares = sum(source.share or 0.0 for source in self.data.external)
        if shares >= 1:
            raise ValueError(f"data.external: the sources' shares add up to {shares:g}; they "
                             "must leave part of each epoch to the competition's photos (< 1)")

    def _check_split_batchnorm(self) -> None:
        """Split BatchNorm needs every training batch to be half competition rows, half
        outside rows, in that order, on one device."""
        refused = [
            ("without data.external", not self.data.external,
             "it splits each batch between competition and outside rows; add a source"),
            ("with an odd train.batch_size", self.train.batch_size % 2 == 1,
             f"each batch is split in halves; got {self.train.batch_size}"),
            ("with several devices", self.train.several_devices,
             "the distributed sampler reorders the halves of each batch; train on one device"),
            ("with model.head: per_attribute", self.model.head == PER_ATTRIBUTE,
             "a network whose attribute no source knows has no outside half; use single or "
             "multihead"),
            ("with train.average_checkpoints", self.train.average_checkpoints >= 2,
             "the soup re-measures BatchNorm statistics on mixed batches"),
        ]
        for setting, clash, why in refused:
            if clash:
                raise ValueError(f"model.outside_batchnorm: split {setting}: {why}")

    @model_validator(mode="after")
    def _settings_agree(self) -> RunConfig:
        """Rules that combine two settings, so a bad pair fails before anything is written."""
        validated = self.data.validates
        if self.sched.name == "plateau" and not validated:
            raise ValueError("sched.name: plateau follows validation macro F1; it needs "
                             "data.val_ratio > 0 or data.folds >= 2")
        if self.train.average_checkpoints >= 2 and not validated:
            raise ValueError("train.average_checkpoints picks epochs by validation macro F1; "
                             "it needs data.val_ratio > 0 or data.folds >= 2")
        if self.train.early_stopping_patience is not None and not validated:
            raise ValueError("train.early_stopping_patience follows validation macro F1; it "
                             "needs data.val_ratio > 0 or data.folds >= 2")
        mixing = self.aug.mixup_alpha > 0 or self.aug.cutmix_alpha > 0
        if mixing and self.train.batch_size % 2:
            raise ValueError(f"aug.mixup_alpha / aug.cutmix_alpha need an even "
                             f"train.batch_size; got {self.train.batch_size}")
        if self.data.external:
            self._check_external()
        if self.model.outside_batchnorm == "split":
            self._check_split_batchnorm()
        if self.distill.teacher is not None and (mixing or self.aug.cutmix_mode != "box"):
            raise ValueError("distill.teacher gives each image its own soft targets; mixup and "
                             "cutmix blend images the teacher never saw: set "
                             "aug.mixup_alpha and aug.cutmix_alpha to 0 and aug.cutmix_mode "
                             "to box")
        if self.optim.lr == "auto" and self.train.several_devices:
            raise ValueError("optim.lr: auto runs Lightning's learning-rate finder, which "
                             "needs one device; run `maskclf lr-find` and set optim.lr")
        if self.model.age_regression_weight > 0:
            if self.model.head != "multihead":
                raise ValueError("model.age_regression_weight adds a head to the multi-head "
                                 "model; set model.head: multihead")
            if mixing and self.aug.cutmix_mode == "box":
                raise ValueError("model.age_regression_weight cannot follow timm's Mixup/"
                                 "CutMix targets; use aug.cutmix_mode: vertical_half or set "
                                 "aug.mixup_alpha and aug.cutmix_alpha to 0")
        if self.model.head == PER_ATTRIBUTE:
            for attribute in ATTRIBUTES:
                self.for_attribute(attribute)  # each merged config obeys the same rules
        return self

    def for_attribute(self, attribute: str) -> RunConfig:
        """This config with ``per_attribute[attribute]`` merged in, as a single-model config."""
        raw = self.model_dump(mode="json")
        for section, values in self.per_attribute.get(attribute, {}).items():
            raw[section].update(values)
        raw["per_attribute"] = {}
        raw["model"]["head"] = "single"
        return build_config(raw, f"per_attribute.{attribute}")


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The section class inside a field's type (``LossConfig`` in ``dict[.., LossConfig]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _section_model(arg)
        if found is not None:
            return found
    return None


def _known_keys(loc: tuple) -> list[str]:
    """The keys allowed where ``loc`` points (dict keys such as ``loss.attributes.age`` skipped)."""
    model: type[BaseModel] = RunConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None:
            continue
        section = _section_model(field.annotation)
        if section is None:
            return []
        model = section
    return list(model.model_fields)


def _unknown_key(loc: tuple) -> str:
    close = difflib.get_close_matches(str(loc[-1]), _known_keys(loc[:-1]), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else "see configs/*.yaml for the keys"
    return f"unknown key ({hint})"


def _origin(key: str, overrides: list[str]) -> str:
    """`` (from -o KEY=VALUE)`` when an override set ``key`` or a section above it."""
    for text in reversed(overrides):  # the last override of a key is the one that counts
        path = text.partition("=")[0].strip()
        if key == path or key.startswith(f"{path}.") or path.startswith(f"{key}."):
            return f" (from -o {text})"
    return ""


def _list_hint(item: dict) -> str:
    """A list typed the shell's way (``128,96``) gets the syntax it needs (``[128,96]``)."""
    value = item.get("input")
    if item["type"] in ("tuple_type", "list_type") and isinstance(value, str) and "," in value:
        return f"; write a list in brackets: [{value}]"
    return ""


def _format_errors(error: ValidationError, source: str, overrides: list[str] = ()) -> str:
    lines = [f"invalid config {source}:"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        origin = _origin(key, list(overrides)) if key else ""
        if item["type"] == "extra_forbidden":
            lines.append(f"  {key}: {_unknown_key(item['loc'])}{origin}")
        elif item["type"] == "value_error":  # our validators' messages name their keys
            message = item["msg"].removeprefix("Value error, ")
            lines.append(f"  {key}: {message}{origin}" if key else f"  {message}")
        else:
            lines.append(f"  {key}: {item['msg']} (got {item.get('input')!r}"
                         f"{_list_hint(item)}){origin}")
    return "\n".join(lines)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b=value`` into its key path and a YAML-typed value (``3e-4`` -> float)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} must look like key.path=value, e.g. optim.lr=3e-4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from exc
    return key.strip().split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``key.path=value`` override set."""
    merged = yaml.safe_load(yaml.safe_dump(raw)) or {}
    for text in overrides:
        path, value = parse_override(text)
        node = merged
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part!r} is a value, not a section")
            node = child
        node[path[-1]] = value
    return merged


def check_keys(raw: dict[str, Any], source: str) -> None:
    """Raise :class:`ConfigError` for unknown keys and wrong types in ``raw``, but not for
    rules that combine settings (a search space may pair a value with others that fit)."""
    try:
        cfg = RunConfig.model_validate(raw)
    except ValidationError as exc:
        if any(item["loc"] for item in exc.errors()):
            raise ConfigError(_format_errors(exc, source)) from None
        return
    _check_names(cfg, source)


PER_ATTRIBUTE = "per_attribute"
"""The ``model.head`` that trains three networks, one per attribute (each its own task)."""


def check_names(cfg: RunConfig) -> None:
    """Every name ``cfg`` holds is registered (losses, head, face detector), so a typo fails
    with the config. After the key checks, since the loss and head registries load torch."""
    losses = [cfg.loss, *cfg.loss.attributes.values()]
    for name in (n for loss in losses for n in
                 ([loss.name] if isinstance(loss.name, str) else loss.name)):
        LOSSES.check(name)
    if cfg.model.head != PER_ATTRIBUTE and (cfg.model.head not in TASKS
                                            or TASKS.get(cfg.model.head).attribute):
        heads = [PER_ATTRIBUTE, *(n for n in TASKS.names() if not TASKS.get(n).attribute)]
        raise ConfigError(f"model.head: unknown head {cfg.model.head!r}; known: "
                          f"{', '.join(sorted(heads))}")
    FACE_DETECTORS.check(cfg.data.face_detector)


def build_config(raw: dict[str, Any], source: str = "<dict>",
                 overrides: list[str] = ()) -> RunConfig:
    """Validate a plain dict into a :class:`RunConfig`, naming every bad key and name (and
    the ``overrides`` that set it)."""
    try:
        cfg = RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source, overrides)) from None
    _check_names(cfg, source, overrides)
    return cfg


def _check_names(cfg: RunConfig, source: str, overrides: list[str] = ()) -> None:
    """:func:`check_names`, its message in the config's error format."""
    try:
        check_names(cfg)
    except ConfigError as exc:
        key = str(exc).split(":", 1)[0]
        raise ConfigError(f"invalid config {source}:\n  {exc}{_origin(key, list(overrides))}"
                          ) from None


RECIPES = Path(str(files("maskclf") / "recipes"))
"""The packaged recipes (``configs/`` in a checkout links here), with ``aug/`` (augmentation
pipelines) and ``auto/`` (``maskclf auto`` presets)."""
LEGACY_RECIPES = "configs"
"""The packaged recipes' old folder name: the saved configs of runs made before the rename
may name files in it (``.../maskclf/configs/aug/strong.yaml``)."""


def packaged_config(name: str) -> Path:
    """Path of a config shipped inside the package (``demo``, ``baseline``...)."""
    return RECIPES / f"{name}.yaml"


def packaged_recipes() -> list[dict[str, Any]]:
    """The training recipes shipped with maskclf (not the tuning space): name, file, the
    first clause of its header comment, and its backbone, image size and epochs."""
    recipes = []
    for path in sorted(packaged_config("demo").parent.glob("*.yaml")):
        text = path.read_text()
        raw = yaml.safe_load(text) or {}
        if "model" not in raw and "train" not in raw:
            continue  # a search space, not a recipe
        comment = " ".join(line.lstrip("# ").strip() for line in text.splitlines()
                           if line.startswith("#"))
        cfg = build_config(raw, str(path))
        recipes.append({"name": path.stem, "file": str(path),
                        "about": re.split(r"[.:;(]", comment)[0].strip(),
                        "model": cfg.model.name, "head": cfg.model.head,
                        "image_size": list(cfg.data.image_size), "epochs": cfg.train.epochs})
    return recipes


def load_raw_config(path: Path | str | None) -> dict[str, Any]:
    """A YAML config file as a plain dict (``None``: {}, all defaults), not yet validated."""
    if path is None:
        return {}
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder; expected a YAML file")
    if not path.is_file():
        shipped = packaged_config(path.stem)
        if (path.parent.name not in ("", ".", LEGACY_RECIPES, RECIPES.name)
                or not shipped.is_file()):
            names = sorted(p.stem for p in shipped.parent.glob("*.yaml"))
            raise ConfigError(f"config file {path} does not exist; recipes shipped with "
                              f"maskclf: {', '.join(names)} (--config NAME; `maskclf "
                              "recipes` describes them)")
        log.info("config file %s is not here; using the recipe shipped with maskclf: %s",
                 path, shipped)
        path = shipped  # `--config configs/cpu.yaml` works outside a checkout too
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections")
    return raw


def load_config(path: Path | str | None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config (``None`` means all defaults) and apply dotted overrides."""
    source = "<defaults>" if path is None else str(path)
    overrides = list(overrides or [])
    return build_config(apply_overrides(load_raw_config(path), overrides), source, overrides)


PATH_SETTINGS = (("data", "corrections"), ("data", "extra"), ("data", "external"),
                 ("data", "cache_dir"),
                 ("model", "weights"), ("aug", "pipeline"), ("distill", "teacher"))
"""Settings that may name files or folders relative to the working folder."""


def absolute_paths(cfg: RunConfig) -> RunConfig:
    """``cfg`` with every relative path setting that names something here made absolute, so
    a run's saved config resumes and predicts from any folder. Names that are not files
    (a preset like ``strong``, packaged weights like ``efficientnet_lite0``) stay names;
    ``data.cache_dir`` is made absolute even before it exists."""
    def resolve(value: Any, always: bool) -> Any:
        if isinstance(value, list):
            return [resolve(item, always) for item in value]
        if isinstance(value, ExternalSource):
            return value.model_copy(update={"path": resolve(value.path, always)})
        if isinstance(value, Path) and not value.is_absolute() and (always or value.exists()):
            return value.resolve()
        return value

    sections = {}
    for section, key in PATH_SETTINGS:
        current = sections.get(section, getattr(cfg, section))
        value = resolve(getattr(current, key), always=key == "cache_dir")
        sections[section] = current.model_copy(update={key: value})
    return cfg.model_copy(update=sections)


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    """Plain YAML-safe dict of a config (paths as strings, tuples as lists)."""
    return cfg.model_dump(mode="json")


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
