"""Activation maps: the in-graph CAM equals grad-cam's Grad-CAM, a trained network's mask map
lies on the drawn mask, and ``maskclf explain`` and the report show them."""

import json

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from maskclf import labels
from maskclf.cli import app
from maskclf.config import load_config
from maskclf.data.layout import image_class
from maskclf.data.synthetic import draw_photo, make_person, make_synthetic
from maskclf.data.transforms import centre_crop, preprocess
from tests.conftest import TINY_OVERRIDES
from tests.helpers.cli_result import assert_clear_error_or_works

runner = CliRunner()
SIZE = (128, 96)  # a 4 x 3 map at 1/32: enough to tell the mask from the background


def _random_images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, *SIZE, 3), dtype=np.uint8)


@pytest.mark.parametrize(("head", "model"), [("single", "test_efficientnet"),
                                             ("multihead", "test_resnet"),
                                             ("per_attribute", "test_byobnet")])
def test_the_in_graph_cam_is_grad_cams_gradcam(head, model):
    from maskclf.explain.cam import CamHead, exact_cam, network_maps, normalised
    from maskclf.models.factory import build_net
    from maskclf.models.heads import build_task
    from maskclf.models.spec import Preprocessing, resolve_specs

    torch.manual_seed(0)
    spec = resolve_specs(load_config(None, [f"model.name={model}", f"model.head={head}"]))[0]
    net, task = build_net(spec).eval(), build_task(spec)
    preprocessing = Preprocessing.of(spec, net)
    assert exact_cam(net, SIZE) is None
    images = _random_images(3)
    graph = CamHead(net, task).eval()
    with torch.no_grad():
        cams = graph(normalised(images, preprocessing)).numpy()
    values = {name: np.array([0, 1, 1]) for name in task.attribute_groups()}
    maps = network_maps(net, task, preprocessing, images, values, "gradcam")
    assert set(maps) == set(values) and cams.shape[1] == len(graph.names())
    for name, found in maps.items():
        for i in range(len(images)):
            value = labels.ATTRIBUTES[name][values[name][i]]
            low = cams[i, graph.names().index(f"{name}/{value}")]
            up = cv2.resize(low, (SIZE[1], SIZE[0]))  # as grad-cam brings maps to the input
            up = (up - up.min()) / (1e-7 + up.max() - up.min())
            assert np.abs(up - found[i]).max() < 1e-4


def test_a_head_that_is_not_pooling_then_linear_is_named():
    import timm

    from maskclf.explain.cam import exact_cam

    why = exact_cam(timm.create_model("test_convnext", num_classes=18).eval(), SIZE)
    assert why is not None and "not mean pooling then linear" in why


@pytest.fixture(scope="module")
def mask_run(tmp_path_factory):
    """A tiny network that has learnt mask status on 48 synthetic persons."""
    from maskclf.train.execute import train_run

    root = tmp_path_factory.mktemp("explain")
    data = make_synthetic(root / "data", persons=48, eval_persons=2, seed=3)
    cfg = load_config(None, [*TINY_OVERRIDES, "model.name=test_efficientnet",
                             "data.image_size=[128,96]", "train.epochs=14", "optim.lr=0.005",
                             "sched.warmup_epochs=1", "model.head=multihead",
                             "train.report=true"])
    result = train_run(cfg, data, root / "runs", "mask", interactive=False)
    assert result.summary["validation"]["attribute_f1"]["mask"] > 0.6  # it learnt masks
    return result.run, data


@pytest.mark.slow
def test_the_mask_map_of_a_trained_network_lies_on_the_drawn_mask(mask_run):
    from maskclf.explain.cam import network_maps
    from maskclf.models.factory import load_net
    from maskclf.models.heads import build_task

    run, _ = mask_run
    model = load_net(next(run.glob("fold*/checkpoints/best*.ckpt")))
    cfg = model.spec.cfg.data
    crops, mask_areas, background = [], [], []
    for index in range(16):  # masks worn (0) and worn wrong (1), on new persons
        rng = np.random.default_rng([77, index])
        person = make_person(rng, f"p{index}", gender=index % 2, age_group=index % 3)
        regions: dict[str, np.ndarray] = {}
        photo = draw_photo(rng, person, index % 2, regions=regions)
        seen = [centre_crop(preprocess(np.repeat(regions[k][..., None] * 255, 3, axis=2)
                                       .astype(np.uint8), cfg), SIZE)[..., 0] > 127
                for k in ("mask", "person")]
        crops.append(centre_crop(preprocess(photo, cfg), SIZE))
        mask_areas.append(seen[0])
        background.append(~seen[0] & ~seen[1])
    maps = network_maps(model.net, build_task(model.spec), model.preprocessing,
                        np.stack(crops), {"mask": np.arange(len(crops)) % 2})["mask"]
    on_mask = np.mean([m[a].mean() for m, a in zip(maps, mask_areas, strict=True)])
    on_background = np.mean([m[b].mean() for m, b in zip(maps, background, strict=True)])
    assert on_mask > 1.5 * on_background, (on_mask, on_background)


@pytest.mark.slow
def test_explain_writes_a_map_per_attribute_for_each_image_and_a_sheet(mask_run, tmp_path):
    run, data = mask_run
    images = sorted((data / "train" / "images").glob("*/*"))[:3]
    out = tmp_path / "maps"
    result = runner.invoke(app, ["explain", str(run), *map(str, images), "--out", str(out),
                                 "--method", "gradcam++", "--target", "true", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["layer"].startswith("bn2") and "blocks" in payload["layer"]
    assert len(payload["images"]) == 3
    for item, image in zip(payload["images"], images, strict=True):
        assert item["target"] == labels.class_names()[image_class(image)]
        with Image.open(item["png"]) as png:
            assert png.format == "PNG"
    with Image.open(out / "explain.png") as sheet:
        assert sheet.height > sheet.width / 3  # one row per image



@pytest.mark.slow
def test_explain_refuses_bad_requests_with_one_line(mask_run, tmp_path):
    run, data = mask_run
    image = str(next((data / "train" / "images").glob("*/*")))
    (tmp_path / "a-file").write_text("x")
    cases = [(["--method", "gradcan"], "Did you mean 'gradcam'"),
             (["--out", str(tmp_path / "a-file")], "is not a folder"),
             (["--target", "wear/purple/<30"], "--target"),
             ([str(tmp_path / "missing.jpg")], "missing.jpg")]
    for extra, fragment in cases:
        result = runner.invoke(app, ["explain", str(run), image, "--out", str(tmp_path / "x"),
                                     *extra])
        assert_clear_error_or_works(result, 2, fragment)
    eval_image = str(next((data / "eval" / "images").glob("*")))
    result = runner.invoke(app, ["explain", str(run), eval_image, "--target", "true",
                                 "--out", str(tmp_path / "x")])
    assert_clear_error_or_works(result, 2, "--target true")


@pytest.mark.slow
def test_the_report_shows_maps_beside_mistakes_and_mean_maps(mask_run):
    from maskclf.reports.run_report import read_maps
    from maskclf.runs.directory import RunDir

    run, _ = mask_run
    rundir = RunDir(run)
    maps = read_maps(rundir)
    assert maps is not None and maps["maps"].shape[1:] == (3, SIZE[0] // 4, SIZE[1] // 4)
    assert maps["maps"].min() >= 0.0 and maps["maps"].max() <= 1.0
    with Image.open(rundir.report_file("attention")) as attention:
        assert attention.width > 600
    text = rundir.report_file("report").read_text()
    assert "attention.png" in text and "inside the face box" in text


@pytest.mark.slow
def test_the_exported_cam_is_the_torch_gradcam(mask_run, tmp_path):
    pytest.importorskip("onnxruntime")
    from maskclf.deploy.export import export_run
    from maskclf.deploy.request import ExportRequest
    from maskclf.explain.cam import network_maps
    from maskclf.models.factory import load_net
    from maskclf.models.heads import build_task
    from maskclf.predict.onnx_backend import ExportedModel

    run, data = mask_run
    manifest = export_run(ExportRequest(run, tmp_path / "export", data=data))
    assert manifest["cam"]["layer"].startswith("bn2")
    exported = ExportedModel.load(tmp_path / "export")
    crops = np.stack([exported.preprocess(np.asarray(Image.open(p).convert("RGB")))
                      for p in sorted((data / "eval" / "images").glob("*"))[:4]])
    probs, maps = exported.probs_and_maps(crops)
    np.testing.assert_allclose(probs, exported.probs(crops), atol=1e-6)
    model = load_net(next(run.glob("fold*/checkpoints/best*.ckpt")))
    said = {name: values.argmax(axis=1)
            for name, values in labels.attribute_marginals(probs).items()}
    expected = network_maps(model.net, build_task(model.spec), model.preprocessing, crops, said)
    for name, found in maps.items():
        for low, torch_map in zip(found, expected[name], strict=True):
            up = cv2.resize(low.astype(np.float32), (SIZE[1], SIZE[0]))
            up = (up - up.min()) / (1e-7 + up.max() - up.min())
            assert np.abs(up - torch_map).max() < 1e-4


def test_maps_outside_the_face_box_are_a_finding_and_maps_on_it_are_not():
    from maskclf.reports.advice import looks_outside_face
    from maskclf.reports.run_report import face_shares

    heat = np.zeros((4, 3, 32, 24), np.float32)
    heat[:2, :, 24:, 18:] = 1.0  # two crops: everything in the bottom-right corner
    heat[2:, :, 8:20, 6:18] = 1.0  # two crops: everything on the face
    faces = np.array([[24, 32, 48, 48]] * 4)  # x, y, w, h in the 128 x 96 crop
    corner = face_shares({"maps": heat[:2], "face": faces[:2]}, SIZE)
    assert corner["mask"][0] == 0.0 and corner["mask"][1] == 2
    assert corner["mask"][2] == pytest.approx(48 * 48 / (128 * 96), abs=0.01)
    config = load_config(None, [])
    found = looks_outside_face(corner, config)
    assert len(found) == 3 and "mask maps lie mostly outside the face" in found[0].what
    assert face_shares({"maps": heat[2:], "face": faces[2:]}, SIZE)["age"][0] == 1.0
    assert looks_outside_face(face_shares({"maps": heat[2:], "face": faces[2:]}, SIZE),
                              config) == []


def test_the_maps_of_a_confident_network_survive_export(tmp_path):
    """P(value) ~ 1 makes d log P / d logits nearly vanish; written as a difference of
    near-equal numbers it was float32 noise, and onnxruntime and torch disagreed by 1e-2 on
    a faces-real network."""
    pytest.importorskip("onnxruntime")
    from maskclf.deploy.export import PredictionGraph, export_graph, graph_difference
    from maskclf.models.factory import LoadedNet, build_net
    from maskclf.models.spec import Preprocessing, resolve_specs

    torch.manual_seed(0)
    spec = resolve_specs(load_config(None, ["model.name=test_efficientnet",
                                            "data.image_size=[128,96]"]))[0]
    net = build_net(spec).eval()
    with torch.no_grad():
        net.get_classifier().bias[0] += 13  # class 0 (wear/male/<30) at P ~ 1 - 4e-5
    model = LoadedNet(net, spec, Preprocessing.of(spec, net), tmp_path / "none.ckpt")
    graph = PredictionGraph(model, [], cam=True)
    images = _random_images(6, seed=1)
    with torch.no_grad():
        assert graph(torch.from_numpy(images))[0].max() > 0.999  # confident
    export_graph(graph, images, tmp_path / "net.onnx", None)
    assert graph_difference(graph, images, tmp_path / "net.onnx") < 1e-4
