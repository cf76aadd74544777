"""Per-model pre-processing: mean/std, resize and centre crop as saved buffers; maps back on the input frame."""

from __future__ import annotations

import pytest
import torch

from ad_core.detector import Detector
from ad_core.preprocessing import IMAGENET_MEAN, IMAGENET_STD, PreProcessor
from ad_core.types import Prediction


class MeanMap(torch.nn.Module):
    """A stand-in model: its map is the input's channel mean, its score the map's maximum."""

    def predict(self, images: torch.Tensor) -> Prediction:
        amap = images.mean(1)
        return Prediction(score=amap.amax(dim=(1, 2)), anomaly_map=amap)


def test_defaults_normalise_with_imagenet_statistics_and_skip_resizing() -> None:
    images = torch.rand(2, 3, 8, 8)
    expected = (images - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(PreProcessor()(images), expected)
    assert torch.equal(PreProcessor(normalize=False)(images), images)
    with pytest.raises(ValueError, match="normalize=False"):
        PreProcessor(normalize=False, mean=(0.5, 0.5, 0.5))


def test_run_settings_give_mean_std_resize_and_centre_crop() -> None:
    pre = PreProcessor.from_run({"image_size": 8, "center_crop": 4, "image_mean": [0.5] * 3, "image_std": [0.25] * 3})
    images = torch.arange(16.0).view(1, 1, 4, 4).expand(1, 3, 4, 4) / 16
    out = pre(torch.nn.functional.interpolate(images, size=(8, 8), mode="nearest"))  # already at 8: no resize
    assert out.shape == (1, 3, 4, 4)
    up = torch.nn.functional.interpolate(images, size=(8, 8), mode="nearest")[..., 2:6, 2:6]
    torch.testing.assert_close(out, (up - 0.5) / 0.25)
    assert pre(torch.rand(2, 3, 16, 12)).shape == (2, 3, 4, 4)  # other sizes are resized first
    with pytest.raises(ValueError, match="larger than image_size"):
        PreProcessor(resize=4, crop=8)
    with pytest.raises(ValueError, match="3 values"):
        PreProcessor(mean=(0.5, 0.5))


def test_detector_returns_maps_on_the_input_frame_with_the_crop_undone() -> None:
    detector = Detector(MeanMap(), pre=PreProcessor(normalize=False, resize=8, crop=4))
    images = torch.zeros(1, 3, 8, 8)
    images[..., 3:5, 3:5] = 1.0  # a bright centre, inside the crop
    pred = detector.predict(images)
    assert pred.anomaly_map.shape == (1, 8, 8)
    assert torch.equal(pred.anomaly_map[0, 2:6, 2:6], images[0, 0, 2:6, 2:6])
    outside = torch.ones(8, 8, dtype=torch.bool)
    outside[2:6, 2:6] = False
    assert torch.equal(pred.anomaly_map[0][outside], torch.zeros(int(outside.sum())))  # the crop's minimum



@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_pixel_outside_the_crop_is_still_an_error(value: float) -> None:
    detector = Detector(MeanMap(), pre=PreProcessor(normalize=False, resize=8, crop=4))
    images = torch.zeros(1, 3, 8, 8)
    images[0, 0, 0, 0] = value  # cropped away before the model would see it
    with pytest.raises(ValueError, match="NaN or infinite"):
        detector.predict(images)

def test_buffers_are_saved_and_old_state_dicts_still_load() -> None:
    pre = PreProcessor(mean=(0.1, 0.2, 0.3), std=(1.0, 2.0, 3.0), resize=(6, 10), crop=4)
    state = pre.state_dict()
    assert set(state) == {"mean", "std", "resize", "crop"}
    loaded = PreProcessor()
    loaded.load_state_dict(state)
    images = torch.rand(1, 3, 12, 20)
    assert torch.equal(loaded(images), pre(images))
    legacy = PreProcessor(resize=5)  # a checkpoint written before resize/crop were buffers holds mean and std only
    legacy.load_state_dict({"mean": state["mean"], "std": state["std"]}, strict=True)
    assert legacy.resize.tolist() == [5, 5] and legacy.crop.tolist() == [0, 0]
    torch.testing.assert_close(legacy.std.flatten(), torch.tensor([1.0, 2.0, 3.0]))
