"""The notebook in docs/ runs end to end in a real Jupyter kernel (nbclient), so it cannot
rot: training shows a notebook progress bar (a widget), not a stream of lines."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "notebooks" / "quickstart.ipynb"
WIDGET = "application/vnd.jupyter.widget-view+json"

pytestmark = pytest.mark.slow


def test_the_quickstart_notebook_runs_end_to_end(tmp_path):
    notebook = nbformat.read(shutil.copy(NOTEBOOK, tmp_path), as_version=4)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = {i: cell.get("outputs", []) for i, cell in enumerate(notebook.cells)}
    training = outputs[2]
    assert any(WIDGET in output.get("data", {}) for output in training), training
    assert not any(output.get("name") == "stderr" and "epoch 1/3" in output.get("text", "")
                   for output in training)  # no stream of progress lines
    text = "".join(output.get("text", "") for cell in outputs.values() for output in cell)
    assert "OOF macro F1" in text and "ConfigError" in text and "trian" in text
    assert (tmp_path / "runs" / "notebook" / "submission.csv").is_file()
