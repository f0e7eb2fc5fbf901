"""The layering rules of docs/architecture.md, checked on the source and at import."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "maskclf"
ARCHITECTURE = SRC.parents[1] / "docs" / "architecture.md"


def _source(module: str) -> Path:
    path = SRC / f"{module.replace('.', '/')}.py"
    return path if path.is_file() else SRC / module.replace(".", "/") / "__init__.py"


def _maskclf_imports(module: str) -> set[str]:
    """Every maskclf module ``module`` imports; ``from maskclf import labels`` counts as
    ``maskclf.labels``."""
    tree = ast.parse(_source(module).read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "maskclf":
            found |= {f"maskclf.{a.name}" for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(
                "maskclf"):  # ``from maskclf.train import plan`` imports maskclf.train.plan
            package = SRC.joinpath(*node.module.split(".")[1:])
            modules = {f"{node.module}.{a.name}" for a in node.names
                       if (package / f"{a.name}.py").is_file()}
            found |= modules or {node.module}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("maskclf")}
    return found


@pytest.mark.parametrize(("module", "forbidden"), [
    ("train.plan", {"maskclf.predict.workflows"}),
    ("train.execute", {"maskclf.predict.workflows"}),
    ("train.module", {"maskclf.predict.workflows", "maskclf.train.plan", "maskclf.train.execute"}),
    ("train.trainer", {"maskclf.predict.workflows", "maskclf.train.plan",
                       "maskclf.train.execute"}),
    ("predict.module", {"maskclf.train", "maskclf.predict.workflows"}),
    ("predict.workflows", {"maskclf.train"}),
    ("models.factory", {"maskclf.train", "maskclf.predict"}),
    ("data.loaders", {"maskclf.train", "maskclf.predict"}),
    ("runs.directory", {"maskclf.train", "maskclf.predict"}),
])
def test_layers_import_only_downwards(module, forbidden):
    """``forbidden`` names modules or whole packages (every module under them)."""
    imported = _maskclf_imports(module)
    assert not {name for name in imported
                for banned in forbidden if name == banned or name.startswith(banned + ".")}


def test_library_code_logs_instead_of_printing():
    printing = [str(path.relative_to(SRC)) for path in SRC.rglob("*.py")
                if path.parent.name != "cli" and path.name != "progress.py"
                and any(isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print"
                        for node in ast.walk(ast.parse(path.read_text())))]
    assert printing == []


def test_importing_maskclf_changes_no_global_state():
    script = """
import logging, sys, warnings
import lightning, matplotlib, timm, torch, albumentations  # their own import-time effects
filters = list(warnings.filters)
matplotlib.use = lambda *args, **kwargs: sys.exit("matplotlib.use() called")
levels = {n: logging.getLogger(n).level for n in ("lightning.pytorch", "maskclf")}
import maskclf.cli, maskclf.train.execute, maskclf.predict.workflows
import maskclf.reports.run_report, maskclf.reports.eda
import maskclf.data.face_report
assert warnings.filters == filters, "warning filters changed"
assert {n: logging.getLogger(n).level for n in levels} == levels, "logger levels changed"
"""
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr


def test_training_and_predicting_leave_warning_filters_and_loggers_alone(synthetic_root,
                                                                          tmp_path):
    import logging
    import warnings

    from maskclf.predict.workflows import predict_run
    from maskclf.train.execute import train_run

    from .conftest import tiny_config

    lightning_logger = logging.getLogger("lightning.pytorch")
    lightning_logger.setLevel(logging.INFO)  # conftest quiets it; a library must not
    level, filters = lightning_logger.level, list(warnings.filters)
    result = train_run(tiny_config(), synthetic_root, tmp_path, "quiet", interactive=False)
    predict_run(result.run, synthetic_root)
    assert warnings.filters == filters
    assert lightning_logger.level == level


def _layers() -> list[set[str]]:
    """docs/architecture.md's "Layers" table: the module paths of each row (``train/plan``),
    or a package standing for every module under it (``auto``)."""
    section = ARCHITECTURE.read_text().split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[2] for line in section.splitlines()
            if line.startswith("| ") and not line.startswith(("| layer", "| ---"))]
    return [{name.replace("/", ".") for name in re.findall(r"`([\w/]+)`", row)}
            for row in rows]


LAYERS = _layers()
ENTRY_POINTS = {"__main__", "__init__"}  # the package itself: above every layer


def _module_names() -> list[str]:
    """Every module of maskclf by its dotted path (``train.plan``; a package's ``__init__``
    is the package)."""
    return [".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
            for path in SRC.rglob("*.py")]


def _layer(module: str) -> int:
    """The row of ``module``: the row naming it, or naming the closest package above it."""
    name = module.removeprefix("maskclf.").removeprefix("maskclf")
    if name in ENTRY_POINTS or name == "":
        return len(LAYERS)
    parts = name.split(".")
    for depth in range(len(parts), 0, -1):
        found = [i for i, names in enumerate(LAYERS) if ".".join(parts[:depth]) in names]
        if found:
            return found[0]
    if (SRC / Path(*parts)).is_dir():  # a package's __init__ (docstring only): no layer
        return len(LAYERS)
    raise AssertionError(f"{module} is in no row of the Layers table of {ARCHITECTURE.name}")


def test_the_layer_table_names_every_module_once_and_only_real_ones():
    listed = [name for row in LAYERS for name in row]
    assert len(listed) == len(set(listed))
    real = set(_module_names())
    assert [name for name in listed if name not in real] == []
    for module in real - ENTRY_POINTS:
        _layer(module)  # every module has a row


def test_package_initialisers_hold_no_code():
    """A package's ``__init__`` is its docstring (``maskclf.cli`` excepted: the typer app),
    so importing one module of a package imports nothing else of it."""
    loaded = [str(path.relative_to(SRC)) for path in SRC.rglob("__init__.py")
              if path.parent not in (SRC, SRC / "cli")
              and any(not isinstance(node, ast.Expr) for node in ast.parse(path.read_text()).body)]
    assert loaded == []


def test_every_module_imports_only_from_its_layer_or_above():
    upward = []
    for module in _module_names():
        for imported in _maskclf_imports(module):
            if imported != "maskclf" and _layer(imported) > _layer(module):
                upward.append(f"{module} -> {imported}")
    assert upward == []


def test_every_registry_location_is_a_module_that_fills_it():
    """The module strings of ``maskclf.registry`` name real modules, and each registers at
    least one entry of its registry when imported."""
    import importlib

    from maskclf import registry

    registries = [value for value in vars(registry).values()
                  if isinstance(value, registry.Registry)]
    assert len(registries) == 5
    for found in registries:
        for location in found.locations:
            importlib.import_module(location)
        assert found.names(), f"{found.kind}: {found.locations} registered nothing"
