"""Post-processing saved with a model: image and pixel thresholds each map to exactly 0.5 on their own scale."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from ad_core import load_model, train
from ad_core.data import DemoDataset
from ad_core.detector import Detector
from ad_core.model import AnomalyModel
from ad_core.postprocessing import PostProcessor


class ScaledScore(AnomalyModel):
    """A toy model whose image score is 700 times its map's maximum, as FRE's roughly is."""

    def compute(self, images: torch.Tensor):
        amap = images.mean(1)
        return 700.0 * amap.flatten(1).amax(1), amap


def test_each_threshold_maps_to_one_half_on_its_own_scale() -> None:
    post = PostProcessor()
    post.calibrate(700.0, 350.0, 1050.0)
    post.calibrate_pixels(0.6, 0.0, 1.2)
    assert post.normalize_score(torch.tensor([700.0])).item() == 0.5
    assert post.normalize_map(torch.tensor([0.6])).item() == 0.5
    assert post.normalize_score(torch.tensor([350.0, 1050.0])).tolist() == [0.0, 1.0]
    assert post.normalize_map(torch.tensor([-0.6, 1.8])).tolist() == [0.0, 1.0]  # clamped


def test_toy_model_whose_score_is_not_the_map_maximum() -> None:
    model = ScaledScore()
    model.mark_fitted()
    detector = Detector(model, normalize=False)
    detector.post.calibrate(700.0 * 0.5, 0.0, 700.0)
    detector.post.calibrate_pixels(0.5, 0.0, 1.0)
    images = torch.full((2, 3, 8, 8), 0.25)
    images[1, :, :4] = 0.75  # the top half of the second image is above the pixel threshold
    detection = detector.detect(images)
    assert detection.label.tolist() == [0, 1]
    assert detection.mask[0].sum() == 0 and detection.mask[1, :4].all() and detection.mask[1, 4:].sum() == 0
    assert torch.equal(detection.normalized_map >= 0.5, detection.mask.bool())
    assert torch.equal(detection.normalized_score >= 0.5, detection.label.bool())


@pytest.fixture(scope="module")
def fre_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fre")
    (run,) = train("demo", "weave", "fre-r18", verbose=False, pretrained=False, image_size=64, num_epochs=1,
                   output_dir=out, write_maps=False)
    return run


def test_fre_maps_get_their_own_threshold(fre_run) -> None:
    detector = load_model(fre_run.output_dir)
    post = detector.post
    assert float(post.threshold) > 100 * float(post.pixel_threshold)  # the score lives on another scale
    assert post.normalize_score(post.threshold).item() == 0.5 and post.normalize_map(post.pixel_threshold).item() == 0.5
    data = DemoDataset(category="weave", split="test", image_size=64)
    detection = detector.detect(torch.stack([data[i].image for i in range(len(data))]))
    assert torch.equal(detection.mask, (detection.anomaly_map >= post.pixel_threshold).long())
    assert detection.mask.any() and not detection.mask.all()  # with the image threshold it would be all 0
    assert torch.equal(detection.normalized_map >= 0.5, detection.mask.bool())
    decisions = json.loads((fre_run.output_dir / "results.json").read_text())["decisions"]
    assert decisions["pixel_threshold"]["value"] == pytest.approx(float(post.pixel_threshold))
    assert "validation" in decisions["pixel_threshold"]["selected_on"]


def test_checkpoint_without_pixel_buffers_loads_without_maps(fre_run, tmp_path) -> None:
    import shutil

    old = tmp_path / "old"
    shutil.copytree(fre_run.output_dir, old)
    state = load_file(str(old / "model.safetensors"))
    for name in ("pixel_threshold", "map_min", "map_max"):
        del state[f"post.{name}"]
    save_file(state, str(old / "model.safetensors"))
    meta = json.loads((old / "model.json").read_text())
    meta.pop("weights_sha256", None)
    meta.pop("run_id", None)  # as saved before run folders had a manifest
    (old / "model.json").write_text(json.dumps(meta))
    (old / "manifest.json").unlink()
    with pytest.warns(UserWarning, match="predates pixel thresholds"):
        detector = load_model(old)
    assert not detector.post.pixel_calibrated and detector.post.calibrated
    detection = detector.detect(torch.rand(2, 3, 64, 64))
    assert detection.normalized_map is None and detection.mask is None and detection.anomaly_map is not None
    assert detection.label.shape == (2,)


def test_map_panels_use_the_pixel_threshold_and_map_range(tiny_plugin, outputs, monkeypatch) -> None:
    from ad_core import evaluation

    shown = {}

    def capture(out_dir, images, maps, threshold, names, masks, vmin, vmax, **captions):
        shown.update(threshold=threshold, vmin=vmin, vmax=vmax)
        return []

    monkeypatch.setattr(evaluation, "save_map_panels", capture)
    (run,) = train("demo", "weave", "tiny-ae", verbose=False, num_epochs=1, image_size=32)
    decisions = json.loads((run.output_dir / "results.json").read_text())["decisions"]
    assert shown["threshold"] == pytest.approx(decisions["pixel_threshold"]["value"])
    assert (shown["vmin"], shown["vmax"]) == (decisions["map_range"]["min"], decisions["map_range"]["max"])
    assert shown["threshold"] != pytest.approx(decisions["image_threshold"]["value"])
