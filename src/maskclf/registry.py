"""Named extension points: losses, TTA views, heads, face detectors, activation-map methods.

One :class:`Registry` type for all of them, so adding an entry is one decorator and every
unknown name gets the same answer: what was asked for, what exists, and the closest match.
The config checks its names against these registries (``RunConfig``'s name check), so a
typo fails with the config, before any file is written.

The registries are declared here, in the foundations, and filled by the modules that
implement their entries (``locations``, imported on first use, as mmengine's registries
do): the config can check a loss name without importing torch at import time.

>>> colours = Registry("colour", "paint.colour")
>>> _ = colours.register("red")(lambda: "#f00")
>>> colours.get("red")()
'#f00'
>>> colours.get("rde")
Traceback (most recent call last):
...
maskclf.errors.ConfigError: paint.colour: unknown colour 'rde'; known: red. Did you mean 'red'?
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from maskclf.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries by lower-case name; ``setting`` is the config key that holds such names;
    ``locations`` are the modules that register the entries, imported on first use."""

    def __init__(self, kind: str, setting: str, locations: tuple[str, ...] = ()):
        self.kind, self.setting, self.locations = kind, setting, locations
        self._entries: dict[str, T] = {}
        self._loaded = not locations

    def _load(self) -> dict[str, T]:
        if not self._loaded:
            self._loaded = True
            for module in self.locations:
                importlib.import_module(module)
        return self._entries

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding ``name``; registering a name twice is a programming error."""
        key = name.lower()

        def add(entry: T) -> T:
            if key in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[key] = entry
            return entry

        return add

    def names(self) -> list[str]:
        return sorted(self._load())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._load()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def problem(self, name: str) -> str | None:
        """What is wrong with ``name`` (unknown, with the closest names), or None."""
        if name in self:
            return None
        close = difflib.get_close_matches(str(name).lower(), self.names(), n=1)
        hint = f". Did you mean {close[0]!r}?" if close else ""
        return f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}{hint}"

    def check(self, name: str) -> str:
        """``name`` when registered, else a :class:`ConfigError` naming the setting."""
        problem = self.problem(name)
        if problem is not None:
            raise ConfigError(f"{self.setting}: {problem}")
        return name

    def get(self, name: str) -> T:
        return self._load()[self.check(name).lower()]


LOSSES: Registry[Any] = Registry("loss", "loss.name", ("maskclf.models.losses",))
"""name -> builder(LossConfig, class weights tensor or None) -> loss module."""
VIEWS: Registry[Any] = Registry("TTA view", "predict.tta", ("maskclf.tta",))
"""name -> pure function of an N x C x H x W image batch."""
TASKS: Registry[Any] = Registry("head", "model.head", ("maskclf.models.heads",))
"""task name -> task class (outputs, loss, probabilities); an 18-class task is also a
``model.head`` value, beside ``per_attribute`` (three attribute networks)."""
FACE_DETECTORS: Registry[Any] = Registry("face detector", "data.face_detector",
                                         ("maskclf.data.faces",))
"""name -> ``faces.Detector`` (boxes of an RGB image, the package it needs)."""
CAM_METHODS: Registry[Any] = Registry("activation-map method", "--method", ("maskclf.explain.cam",))
"""name -> a grad-cam method class (``GradCAM``, ``LayerCAM``, ...)."""
