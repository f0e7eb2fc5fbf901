from collections import Counter

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from maskclf import labels
from maskclf.reports.eda import channel_stats, run_eda

STEM_MASK = {"incorrect_mask": "incorrect", "normal": "not_wear"}


def _hand_counts(root):
    """Classes counted straight from folder and file names, without maskclf's reader."""
    counts = Counter()
    for person in (root / "train/images").iterdir():
        _, gender, _, age = person.name.split("_")
        age_name = labels.AGE_NAMES[0 if int(age) < 30 else 1 if int(age) < 60 else 2]
        for image in person.iterdir():
            if image.name.startswith("."):
                continue
            mask = STEM_MASK.get(image.stem, "wear")
            counts[f"{mask}/{gender}/{age_name}"] += 1
    return counts


def test_eda_counts_equal_hand_counts_and_lists_odd_files(dataset_copy, tmp_path):
    person = sorted((dataset_copy / "train/images").iterdir())[0]
    odd = next(person.glob("normal.*"))
    Image.open(odd).convert("L").save(odd.with_suffix(".tmp.png"), format="PNG")
    odd.unlink()
    odd.with_suffix(".tmp.png").rename(person / "normal.jpg")  # PNG bytes, grey, .jpg name
    result = run_eda(dataset_copy, tmp_path / "eda", per_class=2, stats_sample=None)
    hand = _hand_counts(dataset_copy)
    assert result["class_counts"] == {name: hand[name] for name in labels.class_names()}
    assert result["images"] == sum(hand.values()) and result["persons"] == 12
    assert sum(result["attribute_counts"]["mask"].values()) == result["images"]
    assert result["images_per_person"] == {7: 12}
    assert sum(sum(row.values()) for row in result["gender_age_persons"].values()) == 12
    why = {o["path"]: o["why"] for o in result["odd_files"]}
    odd_path = str((person / "normal.jpg").relative_to(dataset_copy))
    assert "PNG data in a .jpg file" in why[odd_path] and "mode L" in why[odd_path]
    for name in ("report.md", "class_counts.png", "age_histogram.png", "samples.png"):
        assert (tmp_path / "eda" / name).stat().st_size > 0
    with Image.open(tmp_path / "eda" / "samples.png") as grid:
        assert grid.width <= 2500 and grid.height <= 1800  # 3 classes a row, thumbnails
    assert (tmp_path / "eda" / "samples.png").stat().st_size < 2_000_000
    listed = pd.read_csv(tmp_path / "eda" / "odd_files.csv")
    assert odd_path in set(listed["path"])


def test_eda_describes_each_outside_source_beside_the_data(synthetic_root, tmp_path):
    from tests.data.test_external import make_source

    grey = make_source(tmp_path / "grey", [{"file": f"{i}.png", "gender": ("male", "")[i % 2]}
                                           for i in range(6)])
    result = run_eda(synthetic_root, tmp_path / "eda", per_class=1, external=[grey])
    [source] = result["external"]
    assert source["rows"] == 6 and source["known"] == {"mask": 0, "gender": 3, "age": 0}
    assert source["sizes"] == {"48x64": 6} and source["formats"] == {"PNG RGB": 6}
    assert source["channel_mean"] == pytest.approx([128 / 255] * 3, abs=1e-3)  # flat grey
    assert source["channel_mean"] != result["channel_mean"]
    report = (tmp_path / "eda" / "report.md").read_text()
    assert "## Outside sources" in report and "| grey | 6 | 0 | 3 | 0 | male 3 | 48x64 |" in report


def test_eda_refuses_a_bad_source_before_writing(synthetic_root, tmp_path):
    from maskclf.errors import DataError
    from tests.data.test_external import make_source

    bad = make_source(tmp_path / "bad", [{"file": "a.png", "age": "young"}])
    with pytest.raises(DataError, match="row 2, column age"):
        run_eda(synthetic_root, tmp_path / "eda", external=[bad])
    assert not (tmp_path / "eda").exists()


def test_a_long_odd_file_list_says_it_is_cut():
    from maskclf.reports.eda import ODD_LISTED, markdown_report

    result = {"class_counts": {}, "attribute_counts": {}, "images": 1, "persons": 1,
              "images_per_person": {}, "sizes": {}, "formats": {}, "channel_mean": [],
              "channel_std": [], "stats_images": 0,
              "odd_files": [{"path": f"p{i}.jpg", "why": "small"} for i in range(250)],
              "external": []}
    text = markdown_report(result, pd.Series([0] * 18), pd.DataFrame())
    assert f"the first {ODD_LISTED} of 250 are listed" in text and "odd_files.csv" in text
    assert text.count("- `p") == ODD_LISTED


def test_channel_stats_of_known_images(tmp_path):
    paths = []
    for i, colour in enumerate([(255, 0, 0), (0, 0, 255)]):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (32, 32), colour).save(paths[-1])
    mean, std = channel_stats(paths)
    np.testing.assert_allclose(mean, [0.5, 0.0, 0.5], atol=1e-4)
    np.testing.assert_allclose(std, [0.5, 0.0, 0.5], atol=1e-4)
