"""The manual: ``mkdocs build --strict`` passes (no broken link, no missing page), its pages
load nothing from another host, and the CLI reference is the one typer generates now."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mkdocs")
pytest.importorskip("mkdocstrings")

ROOT = Path(__file__).resolve().parents[1]


def test_the_site_builds_strictly_and_loads_nothing_from_another_host(tmp_path):
    site = tmp_path / "site"
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d",
                            str(site)], cwd=ROOT, capture_output=True, text=True,
                           env={"NO_MKDOCS_2_WARNING": "1", "PATH": ""}, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    pages = list(site.rglob("*.html"))
    assert len(pages) >= 13
    external = [f"{page.relative_to(site)}: {found}" for page in pages
                for found in re.findall(r'<(?:link|script)[^>]*(?:href|src)="(?:https?:)?//[^"]*"',
                                        page.read_text())]
    assert external == []
    api = (site / "python-api" / "index.html").read_text()
    assert "Run.train" in api or "maskclf.api.Run.train" in api


def test_the_cli_reference_is_the_one_typer_generates(tmp_path):
    generated = tmp_path / "cli.md"
    subprocess.run([str(Path(sys.executable).parent / "typer"), "maskclf.cli", "utils", "docs",
                    "--name", "maskclf", "--title", "CLI reference", "--output", str(generated)],
                   check=True, capture_output=True, cwd=ROOT, timeout=120)
    assert generated.read_text() == (ROOT / "docs" / "cli.md").read_text(), (
        "docs/cli.md is stale: typer maskclf.cli utils docs --name maskclf "
        '--title "CLI reference" --output docs/cli.md')
