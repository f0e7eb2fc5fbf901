"""``maskclf review``: the session's decisions, its API, its refusals, and the page in a real
browser (Playwright + Chromium)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from maskclf import labels  # noqa: E402
from maskclf.cli import app  # noqa: E402
from maskclf.data.corrections import apply_corrections, load_corrections  # noqa: E402
from maskclf.data.layout import read_train  # noqa: E402
from maskclf.deploy.review_page import create_review_app  # noqa: E402
from maskclf.reports.review import DecisionError, ReviewSession  # noqa: E402
from tests.helpers.server import chromium, served  # noqa: E402
from tests.reports.test_suspects import flipped_oof  # noqa: E402


@pytest.fixture
def run(synthetic_root, tmp_path) -> Path:
    """A run of the synthetic data whose OOF rows doubt a few persons on purpose."""
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.yaml").write_text("seed: 42\n")
    (folder / "run.json").write_text(json.dumps({"data": str(synthetic_root)}))
    oof, flips = flipped_oof(synthetic_root)
    oof.assign(person=oof["ImageID"].map(lambda p: p.split("/")[2]), fold=0).to_csv(
        folder / "oof.csv", index=False)
    (folder / "flips.json").write_text(json.dumps(flips))
    return folder


def test_the_doubted_persons_come_first_with_every_photo(run):
    session = ReviewSession(run)
    flips = json.loads((run / "flips.json").read_text())
    flipped = {*flips["gender"], *flips["age_young"], *flips["mask"]}
    first = [person.folder for person in session.persons[:len(flipped)]]
    assert set(first) == flipped
    state = session.state()
    assert all(len(person["photos"]) == 7 for person in state["persons"])
    assert state["progress"] == {"reviewed": 0, "left": len(session.persons)}
    assert "-o data.corrections=" in state["command"]


def test_every_decision_is_saved_at_once_and_a_restart_shows_it(run, synthetic_root):
    session = ReviewSession(run)
    flips = json.loads((run / "flips.json").read_text())
    man = flips["gender"][0]
    person = session.decide(man, "gender", "unknown")
    assert person["person_decision"]["gender"] == "unknown" and person["reviewed"]
    saved = load_corrections(run / "corrections.yaml")
    assert saved.persons["gender_unknown"] == [man.split("_")[0]]
    other = labels.GENDER_NAMES[1 - labels.GENDER_NAMES.index(person["given"]["gender"])]
    session.decide(man, "gender", other)  # changing one's mind replaces the decision
    photo = person["photos"][0]["key"]
    session.decide(man, "mask", "unknown", image=photo)
    session.decide(man, "age", ">=60", image=photo)
    session.decide(man, "age", "keep", image=photo)  # and takes it back
    saved = load_corrections(run / "corrections.yaml")
    assert saved.persons["gender_wrong"] == [man.split("_")[0]]
    assert saved.persons["gender_unknown"] == [] and saved.images == {photo: {"mask": "unknown"}}
    records, report = apply_corrections(read_train(synthetic_root), saved)
    assert report.counts()["unknown_images"]["mask"] == 1
    restarted = ReviewSession(run).state()
    shown = next(p for p in restarted["persons"] if p["folder"] == man)
    assert shown["person_decision"]["gender"] == other
    assert shown["photos"][0]["decision"] == {"mask": "unknown"}
    assert restarted["progress"]["reviewed"] == 1
    assert not list(run.glob(".*.tmp"))  # atomic writes leave nothing behind


def test_a_level_queues_the_persons_doubted_as_a_whole_or_by_a_photo(run):
    """``--level person``: the persons whose gender or age the mean of their photos doubts
    (the flipped genders and age), not the one with swapped masks; ``photo`` the reverse
    holds the mask swap; ``all`` both."""
    flips = json.loads((run / "flips.json").read_text())
    whole, masks = {*flips["gender"], *flips["age_young"]}, set(flips["mask"])
    queues = {level: ReviewSession(run, level=level) for level in ("all", "person", "photo")}
    folders = {level: [p.folder for p in session.persons] for level, session in queues.items()}
    assert set(folders["person"]) == whole and not masks & set(folders["person"])
    assert masks <= set(folders["photo"]) and whole | masks <= set(folders["all"])
    assert all(set(p.flagged) <= {"gender", "age"} for p in queues["person"].persons)
    assert queues["person"].state()["level"] == "person"
    assert queues["person"].state()["progress"]["left"] == len(whole)
    result = CliRunner().invoke(app, ["review", str(run), "--level", "persons"])
    assert result.exit_code == 2 and "--level 'persons': use one of all, person, photo" in (
        result.output)


@pytest.mark.parametrize(("decision", "message"), [
    ({"folder": "nobody", "attribute": "gender", "choice": "keep"}, "not among"),
    ({"attribute": "hair", "choice": "keep"}, "no attribute 'hair'"),
    ({"attribute": "age", "choice": "60+"}, "'60\\+' is not one of"),
    ({"attribute": "mask", "choice": "unknown"}, "mask is decided per photo"),
    ({"attribute": "mask", "choice": "unknown", "image": "x/../../etc/passwd"},
     "is not a photo of"),
])
def test_a_decision_it_cannot_take_names_what_is_wrong(run, decision, message):
    session = ReviewSession(run)
    folder = session.persons[0].folder
    with pytest.raises(DecisionError, match=message):
        session.decide(**{"folder": folder, **decision})
    assert not (run / "corrections.yaml").exists()


def test_the_api_answers_4xx_with_a_reason_and_serves_only_the_runs_photos(run):
    session = ReviewSession(run)
    client = TestClient(create_review_app(session))
    folder = session.persons[0].folder
    assert client.get("/").text.count("<script>") == 1 and "http" not in client.get("/").text
    assert client.get(f"/photo/{folder}/0").content[:2] in (b"\xff\xd8", b"\x89P")
    assert client.get(f"/photo/{folder}/7").status_code == 404
    assert client.get("/photo/..%2F..%2Fetc/0").status_code == 404
    bad = client.post("/api/decision", json={"folder": folder, "attribute": "age",
                                             "choice": "old"})
    assert bad.status_code == 400 and "is not one of" in bad.json()["detail"]
    extra = client.post("/api/decision", json={"folder": folder, "attribute": "age",
                                               "choice": "keep", "why": "x"})
    assert extra.status_code == 422 and "does not fit" in extra.json()["detail"]
    good = client.post("/api/reviewed", json={"folder": folder})
    assert good.status_code == 200 and good.json()["progress"]["reviewed"] == 1


def test_review_refuses_a_run_without_oof_a_port_in_use_and_a_second_writer(run, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.yaml").write_text("seed: 42\n")
    result = CliRunner().invoke(app, ["review", str(bare)])
    assert result.exit_code == 2 and "oof.csv" in result.output
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["review", str(run), "--port", str(port)])
    assert result.exit_code == 2 and f"--port {port}" in result.output
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / "corrections.yaml.lock").write_text(json.dumps(
            {"host": socket.gethostname(), "pid": sleeper.pid, "started": "now",
             "command": "maskclf review"}))
        with socket.socket() as free:
            free.bind(("127.0.0.1", 0))
            port = free.getsockname()[1]
        result = CliRunner().invoke(app, ["review", str(run), "--port", str(port)])
    finally:
        sleeper.kill()
        sleeper.wait()
    assert result.exit_code == 2 and f"process {sleeper.pid}" in result.output
    assert not (run / "corrections.yaml").exists()


def test_a_reviewer_decides_with_keys_and_clicks_and_a_reload_shows_it(run, tmp_path):
    """The browser test's steps: open the page; the first doubted person shows; g (gender is
    the other one) and a photo's mask "not sure" are saved to the file at once; a (all fine)
    moves on and the progress counts it; a reload shows every decision."""
    playwright = pytest.importorskip("playwright.sync_api")
    executable = chromium()
    flips = json.loads((run / "flips.json").read_text())
    with served(run, command="review", ready="/api/state") as server, \
            playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable,
                                    args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        external = []
        page.on("request", lambda r: external.append(r.url)
                if not r.url.startswith(server.url) else None)
        page.goto(f"{server.url}/")
        page.wait_for_selector("body[data-ready=true]")
        folder = page.inner_text(".person h2").split(". ", 1)[1]
        assert folder in {*flips["gender"], *flips["age_young"], *flips["mask"]}
        page.keyboard.press("g")
        page.wait_for_selector(".person-choice[data-attribute=gender][aria-pressed=true]")
        photo = page.get_attribute("select[data-attribute=mask]", "data-photo")
        page.select_option(f"select[data-attribute=mask][data-photo='{photo}']", "unknown")
        page.wait_for_function("document.querySelector('#progress').textContent"
                               ".startsWith('1 reviewed')")
        page.screenshot(path=str(tmp_path / "review.png"))
        page.keyboard.press("a")
        page.wait_for_function("document.querySelector('#progress').textContent"
                               ".startsWith('1 reviewed')")
        second = page.inner_text(".person h2")
        page.reload()
        page.wait_for_selector("body[data-ready=true]")
        page.click(f"nav button:has-text('{folder}')")
        kept = page.input_value(f"select[data-attribute=mask][data-photo='{photo}']")
        pressed = page.get_attribute(".person-choice[data-attribute=gender][aria-pressed=true]",
                                     "data-choice")
        browser.close()
    saved = yaml.safe_load((run / "corrections.yaml").read_text())
    assert saved["gender_wrong"] == [folder.split("_")[0]]
    assert saved["images"] == {photo: {"mask": "unknown"}} and saved["reviewed"] == [folder]
    assert not second.endswith(folder) and kept == "unknown" and pressed != "keep"
    assert external == []  # no CDN, nothing from another host
    assert (tmp_path / "review.png").stat().st_size > 20_000
    shots = os.environ.get("MASKCLF_SCREENSHOTS")
    if shots:  # the README's picture comes from this test
        shutil.copy(tmp_path / "review.png", Path(shots) / "review.png")  # docs/review.png
