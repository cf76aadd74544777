"""`Detector.predict`: decoding and resizing as training does, batching to the graph, outputs read right."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from contract_graphs import expected
from PIL import Image

from ad_runtime import Detector, ImageReadError


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_files_and_folders_are_scored_as_training_prepares_them(make_export, images) -> None:
    detector = Detector.load(make_export(height=24, width=32))
    results = detector.predict([images])
    assert [r.path.name for r in results] == ["img0.png", "img1.png", "img2.png", "img3.png", "img4.png"]
    for result in results:
        want = expected(_rgb(result.path), 24, 32)
        assert result.score == pytest.approx(want["score"], abs=1e-6)
        assert result.normalized_score == pytest.approx(want["normalized_score"], abs=1e-6)
        assert result.label is want["label"]
        assert result.threshold == 0.5
        assert result.original_size == _rgb(result.path).shape[:2]
        assert result.anomaly_map.shape == (24, 32) and result.anomaly_map.dtype == np.float32
        np.testing.assert_allclose(result.anomaly_map, want["anomaly_map"], atol=1e-6)
        np.testing.assert_allclose(result.normalized_map, want["normalized_map"], atol=1e-6)
    assert [r.label for r in results] == [False, False, True, False, True]


def test_arrays_and_pillow_images_score_as_their_files(make_export, images) -> None:
    detector = Detector.load(make_export())
    files = sorted(images.rglob("*.png"))
    by_file = detector.predict(files)
    by_array = detector.predict([_rgb(p) for p in files])
    by_pillow = detector.predict([Image.open(p) for p in files])
    assert [r.score for r in by_array] == [r.score for r in by_file] == [r.score for r in by_pillow]
    assert all(r.path is None for r in by_array)
    single = detector.predict(_rgb(files[2]))
    assert len(single) == 1 and single[0].score == by_file[2].score


@pytest.mark.parametrize("batch", [1, 2, 4])
def test_a_fixed_batch_graph_gives_the_dynamic_graphs_results(make_export, images, batch) -> None:
    dynamic = Detector.load(make_export(batch=None)).predict([images], batch_size=3)
    fixed = Detector.load(make_export(batch=batch))
    assert fixed.backend.batch == batch
    results = fixed.predict([images])  # 5 images: the last chunk is padded
    assert len(results) == 5
    assert [r.score for r in results] == [r.score for r in dynamic]
    assert [r.label for r in results] == [r.label for r in dynamic]


def test_a_model_without_maps_returns_none(make_export, images) -> None:
    result = Detector.load(make_export(has_map=False)).predict([images])[0]
    assert result.anomaly_map is None and result.normalized_map is None
    assert result.score == pytest.approx(expected(_rgb(result.path), 24, 32)["score"], abs=1e-6)


def test_a_run_without_pixel_threshold_has_raw_maps_only(make_export, images) -> None:
    directory = make_export(outputs=["score", "normalized_score", "label", "anomaly_map"],
                            thresholds={"image": 0.5, "pixel": None})
    result = Detector.load(directory).predict([images])[0]
    assert result.normalized_map is None
    np.testing.assert_allclose(result.anomaly_map, expected(_rgb(result.path), 24, 32)["anomaly_map"], atol=1e-6)


def test_transparent_pixels_are_composited_on_black(make_export, tmp_path) -> None:
    rgba = np.zeros((20, 20, 4), dtype=np.uint8)
    rgba[..., :3] = 250  # bright, but fully transparent: training sees black
    Image.fromarray(rgba, "RGBA").save(tmp_path / "clear.png")
    result = Detector.load(make_export()).predict(tmp_path / "clear.png")[0]
    assert result.score == 0.0 and result.label is False


def test_sixteen_bit_grey_is_scaled_to_eight_bits(make_export, tmp_path) -> None:
    Image.fromarray(np.full((20, 20), 32768, dtype=np.uint16)).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I")
    result = Detector.load(make_export()).predict(tmp_path / "grey16.png")[0]
    assert result.score == pytest.approx(128 / 255, abs=1e-6)  # a plain convert("RGB") would clip to 255


def test_a_transparent_palette_entry_is_black(make_export, tmp_path) -> None:
    palette_image = Image.new("P", (16, 16), 0)
    palette_image.putpalette([255, 255, 255] + [0, 0, 0] * 255)
    palette_image.info["transparency"] = 0
    palette_image.save(tmp_path / "palette.png", transparency=0)
    result = Detector.load(make_export()).predict(tmp_path / "palette.png")[0]
    assert result.score == 0.0


def test_unreadable_files_raise_or_are_recorded(make_export, images) -> None:
    (images / "broken.png").write_bytes(b"not an image")
    detector = Detector.load(make_export())
    with pytest.raises(ImageReadError, match="broken.png"):
        detector.predict([images])
    unreadable: list[tuple[Path, str]] = []
    results = detector.predict([images], unreadable=unreadable)
    assert len(results) == 5 and [p.name for p, _ in unreadable] == ["broken.png"]


@pytest.mark.parametrize("bad", [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 3), np.float32),
                                 np.zeros((8, 8, 4), np.uint8)])
def test_arrays_must_be_hxwx3_uint8(make_export, bad) -> None:
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        Detector.load(make_export()).predict([bad])


def test_batch_size_must_be_positive(make_export, images) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        Detector.load(make_export()).predict([images], batch_size=0)


def test_an_empty_folder_is_an_error(make_export, tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images found"):
        Detector.load(make_export()).predict([tmp_path / "empty"])
