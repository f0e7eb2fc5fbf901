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
                "maskclf"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("maskclf")}
    return found


@pytest.mark.parametrize(("module", "forbidden"), [
    ("pipeline", {"maskclf.predict"}),
    ("training", {"maskclf.predict", "maskclf.pipeline"}),
    ("inference", {"maskclf.training", "maskclf.pipeline", "maskclf.predict"}),
    ("predict", {"maskclf.training", "maskclf.pipeline"}),
    ("models.factory", {"maskclf.training", "maskclf.predict", "maskclf.inference"}),
    ("data.loaders", {"maskclf.training", "maskclf.predict", "maskclf.inference"}),
    ("rundir", {"maskclf.training", "maskclf.predict", "maskclf.pipeline"}),
])
def test_layers_import_only_downwards(module, forbidden):
    assert not _maskclf_imports(module) & forbidden


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
import maskclf.cli, maskclf.pipeline, maskclf.predict, maskclf.report, maskclf.eda
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

    from maskclf.pipeline import train_run
    from maskclf.predict import predict_run

    from .conftest import tiny_config

    lightning_logger = logging.getLogger("lightning.pytorch")
    lightning_logger.setLevel(logging.INFO)  # conftest quiets it; a library must not
    level, filters = lightning_logger.level, list(warnings.filters)
    result = train_run(tiny_config(), synthetic_root, tmp_path, "quiet", interactive=False)
    predict_run(result.run, synthetic_root)
    assert warnings.filters == filters
    assert lightning_logger.level == level


def _layers() -> list[set[str]]:
    """docs/architecture.md's "Layers" table: the top-level names of each row's modules."""
    section = ARCHITECTURE.read_text().split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[2] for line in section.splitlines()
            if line.startswith("| ") and not line.startswith(("| layer", "| ---"))]
    return [{name.split("/")[0] for name in re.findall(r"`([\w/]+)`", row)} for row in rows]


LAYERS = _layers()
ENTRY_POINTS = {"__main__", "__init__"}  # the package itself: above every layer


def _layer(module: str) -> int:
    top = module.removeprefix("maskclf.").split(".")[0]
    if top in ENTRY_POINTS:
        return len(LAYERS)
    found = [i for i, names in enumerate(LAYERS) if top in names]
    assert found, f"{module} is in no row of the Layers table of {ARCHITECTURE.name}"
    return found[0]


def test_the_layer_table_names_every_module_once():
    tops = {".".join(p.relative_to(SRC).parts).split(".")[0] for p in SRC.rglob("*.py")}
    listed = [name for row in LAYERS for name in row]
    assert (tops - ENTRY_POINTS) <= set(listed)
    assert len(listed) == len(set(listed))


def test_every_module_imports_only_from_its_layer_or_above():
    upward = []
    for path in SRC.rglob("*.py"):
        module = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(
            ".__init__")
        for imported in _maskclf_imports(module):
            if imported != "maskclf" and _layer(imported) > _layer(module):
                upward.append(f"{module} -> {imported}")
    assert upward == []
