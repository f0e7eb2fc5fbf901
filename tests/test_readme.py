"""Every ``maskclf`` command in the README's and the manual's code blocks runs, in order (the
README, then the pages in the site's order), as a user would.

Training commands get tiny-model overrides appended so the suite stays fast; everything
else runs exactly as written, in a fresh folder with the packaged ``configs/``.
"""

import json
import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from maskclf.cli import app
from maskclf.config import packaged_config

from .conftest import TINY_OVERRIDES

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PLACEHOLDERS = {"/path/to/your/data": "own-data", "/path/to/data": "data"}
"""The quickstart's own data and the GPU example's data: synthetic sets made here."""
FAST = [arg for override in [*TINY_OVERRIDES, "model.pretrained=false"]
        for arg in ("-o", override)]


def manual_pages() -> list[Path]:
    """The README, then the site's pages in its navigation order."""
    nav = re.findall(r"^\s+- [^:]+: (\S+\.md)$", (ROOT / "mkdocs.yml").read_text(), flags=re.M)
    return [README, *(ROOT / "docs" / page for page in nav)]


def readme_commands() -> list[str]:
    """The ``maskclf ...`` lines of the README's and the pages' bash blocks, comments
    removed."""
    text = "\n".join(page.read_text() for page in manual_pages())
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    lines = [line.split(" #")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith("maskclf ")]


def as_run_here(command: str) -> list[str]:
    for placeholder, value in PLACEHOLDERS.items():
        command = command.replace(placeholder, value)
    args = shlex.split(command)[1:]
    if (args[0] == "train" and not {"--resume", "--refit"} & set(args)) or (
            args[0] in ("tune", "ablate") and "--report" not in args):
        args += FAST
        if "model.weights" not in command:  # packaged weights do not fit the tiny model
            args += ["-o", "model.weights=null"]
    if args[0] == "demo":
        args += ["--persons", "12", "--eval-persons", "2", *FAST]
    return args


def test_the_readme_shows_every_command():
    shown = {" ".join(shlex.split(c)[1:3]) for c in readme_commands()}
    shown |= {name.split()[0] for name in shown}
    registered = {c.name or c.callback.__name__.replace("_", "-")
                  for c in app.registered_commands}
    registered |= {f"{group.name} {c.name}" for group in app.registered_groups
                   for c in group.typer_instance.registered_commands}
    assert registered <= shown, f"not shown in the README: {registered - shown}"


def test_every_readme_command_runs_as_shown(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(packaged_config("demo").parent)
    runner = CliRunner()
    made = runner.invoke(app, ["make-synthetic", "own-data", "--persons", "12",
                               "--eval-persons", "2"])  # "your own data" for the quickstart
    assert made.exit_code == 0, made.output
    for command in readme_commands():
        args = as_run_here(command)
        if args[0] == "serve":  # runs until stopped: check the app it would serve instead
            from fastapi.testclient import TestClient

            from maskclf.deploy.serve import create_app
            from maskclf.predict.onnx_backend import ExportedModel

            model = ExportedModel.load(args[1])
            health = TestClient(create_app(model)).get("/health")
            assert health.json() == {"status": "ok", "networks": len(model.manifest["networks"])}
            continue
        if args[0] == "review":  # runs until stopped: check the page's state it would serve
            from fastapi.testclient import TestClient

            from maskclf.deploy.review_page import create_review_app
            from maskclf.reports.review import ReviewSession

            state = TestClient(create_review_app(ReviewSession(args[1]))).get("/api/state")
            assert state.status_code == 200 and state.json()["persons"], command
            continue
        result = runner.invoke(app, args)
        assert result.exit_code == 0, f"{command}\n{result.output}"
        if "--json" in args:
            json.loads(result.stdout)
    assert (tmp_path / "runs" / "effb0" / "submission.csv").is_file()
    assert (tmp_path / "ensemble" / "submission.csv").is_file()


def test_the_readme_python_runs_as_shown(tmp_path, monkeypatch):
    """The README's and the pages' Python blocks, in a folder with a synthetic ``data``;
    training gets the tiny-model overrides appended, as the commands do."""
    import maskclf.api

    monkeypatch.chdir(tmp_path)
    made = CliRunner().invoke(app, ["make-synthetic", "data", "--persons", "12",
                                    "--eval-persons", "2"])
    assert made.exit_code == 0, made.output
    plain = maskclf.api.as_overrides
    monkeypatch.setattr(maskclf.api, "as_overrides", lambda overrides: (
        *plain(overrides), *TINY_OVERRIDES, "model.pretrained=false"))
    blocks = re.findall(r"```python\n(.*?)```",
                        "\n".join(page.read_text() for page in manual_pages()), flags=re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
    assert (tmp_path / "runs" / "nb" / "submission.csv").is_file()
