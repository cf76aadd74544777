"""The torch-free runtime scores what ad-core scores: the same decoding, the same exported detector.

1. `ad_runtime.images` decodes and resizes image files of every mode exactly as training does
   (`ad_core.data.images.read_image` + `ImageTransform`): bit-identical input arrays.
2. For tiny runs of three paradigms (memory: PaDiM, knowledge distillation: STFPM, flow: FastFlow; ResNet-18,
   random weights, 64 px, 8 training images), `adcore predict RUN` and `ad-runtime predict EXPORT` (the folder `ad_core.export` writes) give the
   same labels and scores within the tolerance on the same files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from ad_core.cli import main as adcore_main
from ad_core.data import write_demo_dataset
from ad_core.data.images import read_image as core_read_image
from ad_core.data.transforms import ImageTransform

ad_runtime = pytest.importorskip("ad_runtime", reason="the runtime is installed by `nox -s tests` (-e runtime)")
from ad_runtime.cli import main as runtime_main  # noqa: E402
from ad_runtime.images import read_image as runtime_read_image  # noqa: E402
from ad_runtime.images import to_input  # noqa: E402

SCORE_RTOL = 1e-3  # relative to max(1, |score|): float32 reordering in onnxruntime, far below any model's spread
NORMALIZED_ATOL = 1e-3


def _image_files(folder: Path) -> list[Path]:
    """Files of the modes and formats a line camera or a user may hand in, at sizes other than 64 px."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(70, 90, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, size=(70, 90), dtype=np.uint8)
    files = {
        "rgb.png": Image.fromarray(rgb, "RGB"),
        "rgb64.png": Image.fromarray(rgb[:64, :64], "RGB"),  # no resize
        "photo.jpg": Image.fromarray(rgb, "RGB"),
        "rgba.png": Image.fromarray(np.dstack([rgb, alpha]), "RGBA"),
        "la.png": Image.fromarray(np.dstack([rgb[..., 0], alpha]), "LA"),
        "grey.png": Image.fromarray(rgb[..., 1], "L"),
        "grey16.png": Image.fromarray(rgb[..., 2].astype(np.uint16) * 257 // 3),
        "palette.png": Image.fromarray(rgb, "RGB").quantize(16),
        "cmyk.jpg": Image.fromarray(np.dstack([rgb, alpha]), "CMYK"),
        "float.tif": Image.fromarray(rgb[..., 0].astype(np.float32) / 255.0, "F"),
        "bw.bmp": Image.fromarray(rgb[..., 0] > 127),
    }
    paths = []
    for name, image in files.items():
        path = folder / name
        if name == "palette.png":
            image.save(path, transparency=3)
        else:
            image.save(path)
        paths.append(path)
    return paths


def test_runtime_decoding_equals_trainings(tmp_path) -> None:
    transform = ImageTransform(64)
    for path in _image_files(tmp_path / "files"):
        core = transform(core_read_image(path)).numpy()
        runtime = to_input(runtime_read_image(path), 64, 64)
        assert runtime.dtype == np.float32 and runtime.shape == core.shape == (3, 64, 64), path.name
        assert np.array_equal(core, runtime), f"{path.name}: the runtime's input differs from training's"
    assert np.array_equal(to_input(runtime_read_image((tmp_path / "files" / "rgb.png").read_bytes()), 64, 64),
                          transform(core_read_image(tmp_path / "files" / "rgb.png")).numpy())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A small MVTec-layout demo category at 96 px (8 normal training images, 3 + 3 test images)."""
    root = tmp_path_factory.mktemp("parity-data")
    write_demo_dataset(root, ["weave"], image_size=96, n_train=8, n_test_normal=3, n_test_anomalous=3)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("model, overrides", [
    ("padim", {}),
    ("stfpm", {"num_epochs": 1, "max_steps": 2}),
    ("fastflow", {"num_epochs": 1, "max_steps": 2}),
])
def test_adcore_and_ad_runtime_predict_agree(model, overrides, dataset, outputs, tmp_path, capsys) -> None:
    from ad_core import export, train

    torch.manual_seed(0)
    (run,) = train("mvtec", "weave", model, root=dataset, verbose=False, image_size=64, pretrained=False,
                   write_maps=False, **overrides)
    exported = export(run.output_dir, tmp_path / "export")
    assert exported.parity["label_mismatches"] == 0
    folder = tmp_path / "images"  # the test images (96 px: both tools resize them) and files of every mode
    shutil.copytree(dataset / "weave" / "test", folder / "test")
    _image_files(folder / "modes")

    result = CliRunner().invoke(adcore_main, ["predict", str(run.output_dir), str(folder), "--json"])
    assert result.exit_code == 0, result.output
    torch_rows = json.loads(result.output)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        runtime_main(["predict", str(exported.directory), str(folder), "--json"])
    runtime_rows = json.loads(capsys.readouterr().out)
    assert stop.value.code == 0

    assert [r["path"] for r in runtime_rows] == [r["path"] for r in torch_rows] and len(torch_rows) == 6 + 11
    threshold = torch_rows[0]["threshold"]
    assert runtime_rows[0]["threshold"] == pytest.approx(threshold, rel=1e-6)
    for ours, theirs in zip(runtime_rows, torch_rows):
        tolerance = SCORE_RTOL * max(1.0, abs(theirs["score"]))
        assert abs(ours["score"] - theirs["score"]) <= tolerance, (ours, theirs)
        assert abs(ours["normalized_score"] - theirs["normalized_score"]) <= NORMALIZED_ATOL, (ours, theirs)
        if abs(theirs["score"] - threshold) > tolerance:  # a score on the threshold may fall either side
            assert ours["label"] == theirs["label"], (ours, theirs)
