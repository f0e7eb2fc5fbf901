"""Hostile inputs to the newest commands — ``auto``, ``distill``, ``explain``, ``lr-find`` —
and to the two that read many run folders, ``runs`` and ``report``, through the real CLI.

Every case ends in exit 0 (where a user would expect it to work) or exit 2 with one line
naming the culprit, before any work: never a traceback, and a refused request writes
nothing (no study, teacher or explain folder).
"""

from __future__ import annotations

import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from maskclf.cli import app
from tests.helpers.cli_result import TINY, assert_clear_error_or_works, tiny_dataset_and_run
from tests.helpers.interrupt import maskclf

runner = CliRunner()


@dataclass
class Workspace:
    data: Path
    run: Path
    tmp: Path

    @property
    def runs(self) -> Path:
        return self.run.parent

    def file(self, name: str = "a-file") -> Path:
        (self.tmp / name).write_text("x")
        return self.tmp / name

    def auto(self, *args: str) -> list[str]:
        return ["auto", "--data", str(self.data), "--budget", "1m", "--preset", "demo",
                "--out", str(self.tmp / "auto"), "--name", "study", *args]

    def no_eval(self) -> Path:
        copy = self.tmp / "no-eval"
        shutil.copytree(self.data, copy, ignore=shutil.ignore_patterns("eval"))
        return copy

    def image(self, name: str, payload: bytes | None = None) -> Path:
        path = self.tmp / name
        if payload is None:
            shutil.copy(next((self.data / "eval" / "images").iterdir()), path)
        else:
            path.write_bytes(payload)
        return path

    def explain(self, *images: Path, out: Path | None = None) -> list[str]:
        return ["explain", str(self.run), *map(str, images), "--out",
                str(out or self.tmp / "explained")]

    def lr_find(self, *args: str) -> list[str]:
        return ["lr-find", "--data", str(self.data), *TINY, "--plot",
                str(self.tmp / "lr.png"), *args]

    def damaged(self, edit: Callable[[Path], object]) -> Path:
        """A copy of the run beside it, one of its files damaged by ``edit``."""
        copy = self.runs / "damaged"
        shutil.copytree(self.run, copy)
        edit(copy)
        return copy


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A synthetic dataset and a one-epoch two-fold run on it (read-only templates)."""
    return tiny_dataset_and_run(tmp_path_factory.mktemp("hostile-newest"), "-o", "data.folds=2")


@pytest.fixture
def ws(trained, tmp_path) -> Workspace:
    data, run = trained
    return Workspace(data, Path(shutil.copytree(run, tmp_path / "runs" / "r")), tmp_path)


def _cut(path: Path) -> None:
    path.write_text(path.read_text()[:20])


def _bomb() -> bytes:
    """A PNG whose header claims 20,000 x 20,000 pixels."""
    import io

    buffer = io.BytesIO()
    Image.new("L", (20000, 20000)).save(buffer, format="PNG")
    return buffer.getvalue()


Case = Callable[[Workspace], tuple[list[str], int, str]]
CASES: list[tuple[str, Case]] = [
    ("auto-out-is-a-file", lambda w: (w.auto("--out", str(w.file())), 2, "is not a folder")),
    ("auto-out-under-a-file", lambda w: (w.auto("--out", str(w.file() / "sub")), 2,
                                         "is a file")),
    ("auto-threads-0", lambda w: (w.auto("--threads", "0"), 2, "--threads")),
    ("auto-threads-negative", lambda w: (w.auto("--threads", "-1"), 2, "--threads")),
    ("auto-storage-unknown-scheme", lambda w: (w.auto("--storage", "nosuch://x"), 2,
                                               "no database driver")),
    ("auto-storage-not-a-url", lambda w: (w.auto("--storage", "not a url"), 2,
                                          "is not a database URL")),
    ("auto-storage-nobody-listens", lambda w: (w.auto(
        "--storage", "postgresql+psycopg://user:secret@127.0.0.1:1/db"), 2,
        "cannot open the study storage")),
    ("auto-data-without-eval", lambda w: (["auto", "--data", str(w.no_eval()), "--budget", "1m",
                                           "--preset", "demo", "--out", str(w.tmp / "auto")],
                                          2, "eval")),
    ("auto-budget-zero", lambda w: (["auto", "--data", str(w.data), "--budget", "0s", "--out",
                                     str(w.tmp / "auto")], 2, "--budget")),
    ("auto-external-missing", lambda w: (w.auto("--external", str(w.tmp / "nowhere")), 2,
                                         "nowhere")),
    ("distill-out-is-a-file", lambda w: (["distill", str(w.run), "--student", "test_byobnet",
                                          "--out", str(w.file())], 2, "is not a folder")),
    ("distill-unlabelled-without-eval", lambda w: (
        ["distill", str(w.run), "--student", "test_byobnet", "--data", str(w.no_eval()),
         "--unlabelled", "--out", str(w.tmp / "students")], 2, "eval")),
    ("distill-name-leaves-the-folder", lambda w: (
        ["distill", str(w.run), "--student", "test_byobnet", "--name", "../x", "--out",
         str(w.tmp / "students")], 2, "plain folder name")),
    ("distill-source-not-a-run", lambda w: (["distill", str(w.data), "--student",
                                             "test_byobnet"], 2, str(w.data))),
    ("distill-config-missing", lambda w: (
        ["distill", str(w.run), "--student", "test_byobnet", "--config",
         str(w.tmp / "missing.yaml"), "--out", str(w.tmp / "students")], 2, "missing.yaml")),
    ("explain-damaged-jpeg", lambda w: (w.explain(w.image("cut.jpg", b"\xff\xd8\xff not")), 2,
                                        "cut.jpg")),
    ("explain-empty-file", lambda w: (w.explain(w.image("empty.jpg", b"")), 2, "empty.jpg")),
    ("explain-decompression-bomb", lambda w: (w.explain(w.image("bomb.png", _bomb())), 2,
                                              "bomb.png")),
    ("explain-out-is-a-file", lambda w: (w.explain(w.image("a.jpg"), out=w.file()), 2,
                                         "is not a folder")),
    ("explain-no-such-image", lambda w: (w.explain(w.tmp / "missing.jpg"), 2, "missing.jpg")),
    ("explain-text-file-named-jpg", lambda w: (w.explain(w.image("notes.jpg", b"hello")), 2,
                                               "notes.jpg")),
    ("lr-find-max-lr-inf", lambda w: (w.lr_find("--max-lr", "inf"), 2, "--max-lr")),
    ("lr-find-max-lr-nan", lambda w: (w.lr_find("--max-lr", "nan"), 2, "--max-lr")),
    ("lr-find-max-lr-huge", lambda w: (w.lr_find("--max-lr", "1e6"), 2, "--max-lr")),
    ("lr-find-min-lr-zero", lambda w: (w.lr_find("--min-lr", "0"), 2, "--min-lr")),
    ("lr-find-a-billion-steps", lambda w: (w.lr_find("--steps", "1000000000"), 2, "--steps")),
    ("lr-find-too-few-steps", lambda w: (w.lr_find("--steps", "5"), 2, "--steps")),
    ("lr-find-plot-is-a-folder", lambda w: (w.lr_find("--plot", str(w.tmp)), 2, "is a folder")),
    ("lr-find-no-data", lambda w: (["lr-find", "--data", str(w.tmp / "nowhere"), *TINY], 2,
                                   "nowhere")),
    ("lr-find-bad-override", lambda w: (w.lr_find("-o", "optim.lrr=1"), 2, "optim.lrr")),
    ("report-run-json-cut-short", lambda w: (
        ["report", str(w.damaged(lambda r: _cut(r / "run.json"))), "--no-maps"], 2,
        "run.json is damaged")),
    ("report-summary-a-list", lambda w: (
        ["report", str(w.damaged(lambda r: (r / "summary.json").write_text("[1, 2]"))),
         "--no-maps"], 2, "summary.json is damaged")),
    ("report-summary-wrong-shape", lambda w: (
        ["report", str(w.damaged(lambda r: (r / "summary.json").write_text(
            '{"validation": {"macro_f1": "high"}}'))), "--no-maps"], 2, "validation")),
    ("report-config-not-yaml", lambda w: (
        ["report", str(w.damaged(lambda r: (r / "config.yaml").write_text("a: [b"))),
         "--no-maps"], 2, "config.yaml")),
]


@pytest.mark.slow
@pytest.mark.parametrize("setup", [case for _, case in CASES], ids=[name for name, _ in CASES])
def test_hostile_input_to_a_newest_command_is_one_line_and_writes_nothing(ws, setup):
    argv, expected, fragment = setup(ws)
    before = sorted(p.relative_to(ws.tmp) for p in ws.tmp.rglob("*"))
    result = runner.invoke(app, argv)
    assert_clear_error_or_works(result, expected, fragment)
    assert "secret" not in result.output  # a storage URL's password is never shown
    after = sorted(p.relative_to(ws.tmp) for p in ws.tmp.rglob("*"))
    assert after == before  # no study, teacher, student, explain folder or plot


@pytest.mark.slow
def test_lr_find_takes_an_auto_rate_config_for_several_devices(ws):
    """The test runs on one device at its own rates: the settings a run refuses together
    are fine here (the advice to run lr-find is not given to lr-find)."""
    result = runner.invoke(app, ws.lr_find("-o", "optim.lr=auto", "-o", "train.devices=2",
                                           "--steps", "12", "--max-lr", "0.1"))
    assert_clear_error_or_works(result, 0, "")
    assert (ws.tmp / "lr.png").stat().st_size > 0


@pytest.mark.slow
def test_explain_skips_a_damaged_image_among_good_ones_and_says_so(ws):
    good, cut = ws.image("good.jpg"), ws.image("cut.jpg", b"\xff\xd8\xff not")
    result = runner.invoke(app, ws.explain(good, cut))
    assert_clear_error_or_works(result, 0, "")
    assert "skipped" in result.output and "cut.jpg" in result.output.replace("\n", "")
    assert len(list((ws.tmp / "explained").glob("*good*.png"))) == 1
    assert not list((ws.tmp / "explained").glob("*cut*.png"))


@pytest.mark.slow
@pytest.mark.parametrize(("damage", "named"), [
    (lambda r: _cut(r / "run.json"), "run.json is damaged"),
    (lambda r: (r / "summary.json").write_text('"finished"'), "summary.json is damaged"),
    (lambda r: (r / "summary.json").write_text('{"validation": {"macro_f1": 0.5}}'),
     "attribute_f1"),
    (lambda r: (r / "notes.json").write_text('{"note": 1}'), "notes.json is damaged"),
    (lambda r: (r / "config.yaml").write_text("a: [b"), "is not YAML"),
])
def test_runs_lists_the_healthy_runs_and_names_each_damaged_one(ws, damage, named):
    import json

    ws.damaged(damage)
    result = runner.invoke(app, ["runs", str(ws.runs), "--json"])
    assert_clear_error_or_works(result, 0, "")
    rows = {row["name"]: row for row in json.loads(result.stdout)["rows"]}
    assert rows["r"]["status"] == "finished" and rows["r"]["oof_f1"] is not None
    assert rows["damaged"]["status"] == "damaged" and named in rows["damaged"]["note"]
    plain = runner.invoke(app, ["runs", str(ws.runs)])
    assert "damaged: damaged:" in " ".join(plain.output.split())


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_auto_stopped_while_its_storage_opens_exits_128_plus_the_signal(ws, stop):
    """A PostgreSQL server that accepts the connection and never answers: the stop comes
    while the storage opens, before anything of the study is written."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(server.accept()[0]), daemon=True).start()
    port = server.getsockname()[1]
    process = maskclf(*ws.auto(  # SIGINT un-ignored, as in a terminal
        "--storage", f"postgresql+psycopg://user:secret@127.0.0.1:{port}/db"))
    try:
        deadline = time.monotonic() + 60
        while not held and time.monotonic() < deadline:  # it is connecting
            time.sleep(0.2)
        assert held, "the command never connected"
        time.sleep(1.0)
        process.send_signal(stop)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
        server.close()
    assert process.returncode == 128 + stop, err
    assert "while opening the study storage" in err and "Traceback" not in err
    assert not (ws.tmp / "auto").exists()  # the same command starts it afresh
