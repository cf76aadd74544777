"""Bad inputs are found before training and named: mask sizes, JPEG masks, empty masks, layouts, unreadable files."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from ad_core import train
from ad_core.cli import main
from ad_core.data import DatasetLayoutError, FolderDataset, MVTecAD, read_mask, write_demo_dataset


@pytest.fixture
def mvtec(tmp_path):
    root = tmp_path / "mvtec"
    write_demo_dataset(root, ["weave"], image_size=32, n_train=4, n_test_normal=2, n_test_anomalous=2)
    return root


def _a_mask(root):
    return sorted((root / "weave" / "ground_truth").rglob("*_mask.png"))[0]


def test_a_mask_of_another_size_is_an_error_naming_it(mvtec) -> None:
    mask = _a_mask(mvtec)
    Image.fromarray(np.full((16, 16), 255, np.uint8)).save(mask)
    test = MVTecAD(mvtec, "weave", "test", image_size=32)
    with pytest.raises(DatasetLayoutError, match=f"mask {mask} is 16x16 pixels but its image .* is 32x32"):
        test.check_files()
    index = next(i for i, r in enumerate(test.records) if r.mask_path == str(mask))
    with pytest.raises(DatasetLayoutError, match="16x16"):
        test[index]


def test_jpeg_masks_are_binarised_at_half_range(tmp_path) -> None:
    array = np.zeros((32, 32), np.uint8)
    array[5:19, 7:20] = 255  # 182 pixels, not aligned to JPEG's 8x8 blocks
    Image.fromarray(array).save(tmp_path / "mask.jpg", quality=30)
    ringing = np.asarray(Image.open(tmp_path / "mask.jpg"))
    assert (ringing > 0).sum() > 1.5 * 182  # what `> 0` would call defect
    assert read_mask(tmp_path / "mask.jpg").sum() == pytest.approx(182, abs=20)
    Image.fromarray((array > 0).astype(np.uint8)).save(tmp_path / "labels.png")  # 0/1 PNG masks still work
    assert read_mask(tmp_path / "labels.png").sum() == 182


def test_a_defective_image_with_an_all_zero_mask_warns(mvtec) -> None:
    mask = _a_mask(mvtec)
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(mask)
    test = MVTecAD(mvtec, "weave", "test", image_size=32)
    index = next(i for i, r in enumerate(test.records) if r.mask_path == str(mask))
    with pytest.warns(UserWarning, match=f"{mask.name}.*all zero"):
        test[index]


def test_a_missing_train_good_says_what_is_missing_where(mvtec) -> None:
    (mvtec / "weave" / "train" / "good").rename(mvtec / "weave" / "train" / "normal")
    with pytest.raises(DatasetLayoutError, match=r"weave has no train/good folder \(.*train/good is missing\)"):
        MVTecAD(mvtec, "weave", "train")


def test_a_missing_normal_folder_says_what_is_missing_where(tmp_path) -> None:
    (tmp_path / "parts" / "abnormal").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match="parts has no normal folder"):
        FolderDataset(tmp_path, "parts", "train")


def test_require_masks_false_works_from_train_and_the_cli(tiny_plugin, mvtec, tmp_path) -> None:
    _a_mask(mvtec).unlink()
    with pytest.raises(DatasetLayoutError, match="require_masks=False"):
        train("mvtec", "weave", "tiny-ae", root=mvtec, verbose=False, num_epochs=1, output_dir=tmp_path / "a")
    (run,) = train("mvtec", "weave", "tiny-ae", root=mvtec, verbose=False, num_epochs=1, output_dir=tmp_path / "b",
                   require_masks=False)
    assert run.image_auroc == run.image_auroc
    result = CliRunner().invoke(main, ["train", "mvtec", "weave", "tiny-ae", "--root", str(mvtec), "--epochs", "1",
                                       "--output-dir", str(tmp_path / "c"), "--set", "require_masks=false"])
    assert result.exit_code == 0, result.output


def test_an_unreadable_test_image_is_found_before_training(tiny_plugin, mvtec, tmp_path, monkeypatch) -> None:
    bad = sorted((mvtec / "weave" / "test" / "good").iterdir())[0]
    bad.write_bytes(b"\x89PNG truncated")
    fitted = []
    monkeypatch.setattr("ad_core.training.gradient.GradientTrainer.fit", lambda *a, **k: fitted.append(1))
    with pytest.raises(ValueError, match=f"cannot read image {bad}"):
        train("mvtec", "weave", "tiny-ae", root=mvtec, verbose=False, num_epochs=1, output_dir=tmp_path / "out")
    assert fitted == []
