"""How long ``maskclf review`` takes to open with many suspects: its start, ``/api/state``
and the page in Chromium until the first person shows.

    python benchmarks/bench_review.py [--suspects 500] [--reference 50] [--persons-per 3]

Builds a run folder (config, run.json, oof.csv) over a data folder of small JPEGs: persons
of seven photos, ``--suspects`` of them with a gender the out-of-fold probabilities
contradict, ``--persons-per`` - 1 times as many without. Then, for ``--suspects`` and for
``--reference`` suspects, times ``ReviewSession`` (cleanlab over the OOF rows: the server's
start), ``GET /api/state`` (size and time) and, when Chromium is on the machine, the page
from ``goto`` until the first person is drawn. Prints each and ``ratio_page`` (the large
page's time / the reference's).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from maskclf import labels
from maskclf.atomic import write_csv
from maskclf.results.submission import oof_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.helpers.server import served  # noqa: E402

STEMS = list(labels.MASK_STEMS)


def make_run(folder: Path, suspects: int, persons_per: int, seed: int = 0) -> Path:
    """A run whose OOF rows contradict the gender of ``suspects`` persons."""
    rng = np.random.default_rng(seed)
    data, run = folder / "data", folder / "run"
    image = cv2.imencode(".jpg", rng.integers(0, 255, (64, 48, 3), dtype=np.uint8))[1]
    ids, truth, given, persons = [], [], [], []
    for p in range(suspects * persons_per):
        gender, age = int(rng.integers(2)), int(rng.integers(3))
        person = f"{p:06d}_{labels.GENDER_NAMES[gender]}_Asian_{(25, 45, 65)[age]}"
        (data / "train" / "images" / person).mkdir(parents=True)
        for stem in STEMS:
            (data / "train" / "images" / person / f"{stem}.jpg").write_bytes(image.tobytes())
            mask = labels.MASK_STEMS[stem]
            ids.append(f"train/images/{person}/{stem}.jpg")
            truth.append(labels.encode_class(mask, gender, age))
            given.append(labels.encode_class(mask, 1 - gender if p < suspects else gender, age))
            persons.append(person)
    probs = np.full((len(truth), 18), 0.1 / 17)
    probs[np.arange(len(truth)), truth] = 0.9
    run.mkdir()
    (run / "config.yaml").write_text("seed: 42\n")
    (run / "run.json").write_text(json.dumps({"data": str(data)}))
    write_csv(oof_table(ids, probs, np.zeros(len(ids)), given, persons), run / "oof.csv")
    return run


def page_seconds(url: str) -> float | None:
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        return None
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        page = browser.new_page()
        started = time.perf_counter()
        page.goto(url)
        page.wait_for_selector("body[data-ready=true]", timeout=120_000)
        seconds = time.perf_counter() - started
        browser.close()
    return seconds


def measure(suspects: int, persons_per: int) -> dict:
    from fastapi.testclient import TestClient

    from maskclf.deploy.review_page import create_review_app
    from maskclf.reports.review import ReviewSession

    with tempfile.TemporaryDirectory() as scratch:
        run = make_run(Path(scratch), suspects, persons_per)
        started = time.perf_counter()
        session = ReviewSession(run)
        start_s = time.perf_counter() - started
        client = TestClient(create_review_app(session))
        started = time.perf_counter()
        body = client.get("/api/state").content
        state_s = time.perf_counter() - started
        with served(run, command="review", ready="/api/state") as server:
            page_s = page_seconds(f"{server.url}/")
    return {"suspects": len(session.persons), "start_s": start_s, "state_s": state_s,
            "state_kb": len(body) / 1024, "page_s": page_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suspects", type=int, default=500)
    parser.add_argument("--reference", type=int, default=50)
    parser.add_argument("--persons-per", type=int, default=3)
    args = parser.parse_args()
    results = [measure(n, args.persons_per) for n in (args.reference, args.suspects)]
    for result in results:
        page = "no Chromium" if result["page_s"] is None else f"{result['page_s']:.2f} s"
        print(f"{result['suspects']} suspect persons: session {result['start_s']:.2f} s, "
              f"/api/state {result['state_s'] * 1000:.0f} ms ({result['state_kb']:.0f} KB), "
              f"page until the first person {page}")
    if all(r["page_s"] for r in results):
        print(f"ratio_page={results[1]['page_s'] / results[0]['page_s']:.2f}")


if __name__ == "__main__":
    main()
