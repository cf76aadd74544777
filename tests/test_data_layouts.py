"""Datasets read their real on-disk layouts (tiny fixtures made here), convert any image, and fail clearly."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from ad_core.data import (
    BTAD,
    DEMO_CATEGORIES,
    DatasetLayoutError,
    DemoDataset,
    FolderDataset,
    ImageReadError,
    ImageTransform,
    MVTecAD,
    VisA,
    get_dataset,
    list_categories,
    read_image,
    write_demo_dataset,
    write_metadata_csv,
)
from ad_core.types import collate


def save_rgb(path, size=(40, 30), value=None, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(abs(hash(str(path))) % 2**32)
    array = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8) if value is None else \
        np.full((size[1], size[0], 3), value, np.uint8)
    Image.fromarray(array).convert(mode).save(path)


def save_mask(path, size=(40, 30), box=(5, 5, 15, 15)):
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = np.zeros((size[1], size[0]), np.uint8)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = 255
    Image.fromarray(mask).save(path)


@pytest.fixture
def mvtec(tmp_path):
    root = tmp_path / "mvtec"
    for cat, ext in (("bottle", ".png"), ("tile", ".jpg")):
        for i in range(3):
            save_rgb(root / cat / "train" / "good" / f"{i:03d}{ext}")
        save_rgb(root / cat / "test" / "good" / f"000{ext}")
        for i in range(2):
            save_rgb(root / cat / "test" / "crack" / f"{i:03d}{ext.upper()}")
            save_mask(root / cat / "ground_truth" / "crack" / f"{i:03d}_mask.png")
    return root


def test_mvtec_layout_splits_labels_and_masks(mvtec) -> None:
    train = MVTecAD(mvtec, "all", "train", image_size=32)
    test = MVTecAD(mvtec, ["tile"], "test", image_size=32)
    assert len(train) == 6 and train.categories == ["bottle", "tile"]
    assert [r.label for r in test.records] == [1, 1, 0] and test.categories == ["tile"]
    sample = test[0]
    assert sample.image.shape == (3, 32, 32) and sample.mask.shape == (32, 32)
    assert set(sample.mask.unique().tolist()) == {0.0, 1.0}  # nearest resize keeps masks binary
    assert test[2].mask.sum() == 0
    batch = next(iter(DataLoader(test, batch_size=3, collate_fn=collate)))
    assert batch.image.shape == (3, 3, 32, 32) and batch.mask.shape == (3, 32, 32)


def test_mvtec_missing_mask_and_wrong_layout_are_clear(mvtec, tmp_path) -> None:
    (mvtec / "bottle" / "ground_truth" / "crack" / "001_mask.png").unlink()
    with pytest.raises(DatasetLayoutError, match="001_mask.png.*require_masks=False"):
        MVTecAD(mvtec, "bottle", "test")
    lenient = MVTecAD(mvtec, "bottle", "test", require_masks=False)
    assert sum(r.mask_path is None for r in lenient.records if r.label == 1) == 1
    with pytest.raises(DatasetLayoutError, match="available: bottle, tile"):
        MVTecAD(mvtec, "wood", "train")
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        MVTecAD(tmp_path / "nowhere", "bottle")


def test_visa_reads_its_split_file(tmp_path) -> None:
    root = tmp_path / "visa"
    rows = []
    for i, (split, label) in enumerate([("train", "normal"), ("train", "normal"), ("test", "normal"),
                                        ("test", "anomaly")]):
        folder = "Normal" if label == "normal" else "Anomaly"
        image = f"candle/Data/Images/{folder}/{i:03d}.JPG"
        save_rgb(root / image)
        mask = ""
        if label == "anomaly":
            mask = f"candle/Data/Masks/Anomaly/{i:03d}.png"
            save_mask(root / mask)
        rows.append(["candle", split, label, image, mask])
    (root / "split_csv").mkdir(parents=True)
    with open(root / "split_csv" / "1cls.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["object", "split", "label", "image", "mask"], *rows])
    assert len(VisA(root, "candle", "train")) == 2
    test = VisA(root, "all", "test", image_size=24)
    assert [r.label for r in test.records] == [0, 1] and test[1].mask.sum() > 0
    assert list_categories("visa", root) == ["candle"]
    (root / "split_csv" / "1cls.csv").unlink()
    with pytest.raises(DatasetLayoutError, match="split_csv/1cls.csv"):
        VisA(root, "candle")


def test_btad_ok_ko_layout_with_bmp(tmp_path) -> None:
    root = tmp_path / "btad"
    save_rgb(root / "01" / "train" / "ok" / "0000.bmp")
    save_rgb(root / "01" / "test" / "ok" / "0001.bmp")
    save_rgb(root / "01" / "test" / "ko" / "0002.bmp")
    save_mask(root / "01" / "ground_truth" / "ko" / "0002.png")
    test = BTAD(root, "01", "test", image_size=16)
    assert sorted(r.label for r in test.records) == [0, 1]
    assert get_dataset("btad", "01", "train", root=root, image_size=16)[0].image.shape == (3, 16, 16)


def test_folder_dataset_writes_and_respects_its_csv(tmp_path) -> None:
    category = tmp_path / "parts" / "connector"
    for i in range(10):
        save_rgb(category / "normal" / f"n{i}.png")
    save_rgb(category / "abnormal" / "a0.png")
    save_mask(category / "mask" / "a0_mask.png")
    train = FolderDataset(tmp_path / "parts", "connector", "train", test_fraction=0.2)
    test = FolderDataset(tmp_path / "parts", "connector", "test", test_fraction=0.2)
    assert len(train) == 8 and len(test) == 3 and sum(r.label for r in test.records) == 1
    assert {r.path for r in train.records}.isdisjoint({r.path for r in test.records})
    csv_path = category / "metadata.csv"
    rows = list(csv.DictReader(open(csv_path)))
    assert rows[-1]["mask_path"] == "mask/a0_mask.png"
    text = csv_path.read_text().replace(",train,", ",test,", 1)  # the user moves one image to test
    csv_path.write_text(text)
    assert len(FolderDataset(tmp_path / "parts", "connector", "train")) == 7
    assert write_metadata_csv(category) == csv_path and csv_path.read_text() == text  # kept, not overwritten
    assert len(get_dataset("parts", "connector", "test", root=tmp_path / "parts")) == 4


def test_unknown_dataset_name_lists_built_ins(tmp_path, monkeypatch) -> None:
    from ad_core.settings import settings

    monkeypatch.setattr(settings, "dataset_dir", tmp_path)
    with pytest.raises(DatasetLayoutError, match="mvtec, visa, btad, folder, demo"):
        get_dataset("no_such_data", "x")


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "1"])
def test_any_image_mode_becomes_rgb(tmp_path, mode) -> None:
    path = tmp_path / f"img_{mode}.{'jpg' if mode == 'CMYK' else 'png'}"
    save_rgb(path, mode=mode)
    image = read_image(path)
    assert image.mode == "RGB" and image.size == (40, 30)


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path) -> None:
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((8, 8), 32768, np.uint16)).save(path)
    pixel = np.asarray(read_image(path))[0, 0]
    assert abs(int(pixel[0]) - 128) <= 1 and len(set(pixel.tolist())) == 1


def test_corrupt_image_error_names_the_file(tmp_path) -> None:
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    with pytest.raises(ImageReadError, match="broken.png"):
        read_image(path)


def test_datasets_hand_out_unit_range_images(tmp_path) -> None:
    image = Image.fromarray(np.full((4, 4, 3), 255, np.uint8))
    assert torch.allclose(ImageTransform(4)(image), torch.ones(3, 4, 4))
    demo = DemoDataset(category="disc", split="test", image_size=32, n_test_normal=1, n_test_anomalous=1)
    for sample in (demo[0], demo[1]):
        assert 0.0 <= float(sample.image.min()) and float(sample.image.max()) <= 1.0


def test_demo_is_deterministic_with_exact_masks() -> None:
    a = DemoDataset(category="disc", split="test", image_size=48, n_test_normal=2, n_test_anomalous=4)
    b = DemoDataset(category="disc", split="test", image_size=48, n_test_normal=2, n_test_anomalous=4)
    assert torch.equal(a[3].image, b[3].image)
    assert not torch.equal(a[2].image, a[3].image)
    assert [a[i].defect_type for i in range(6)] == ["good", "good", "scratch", "hole", "stain", "missing"]
    assert all(a[i].mask.sum() == 0 for i in range(2)) and all(a[i].mask.sum() > 0 for i in range(2, 6))
    normal = DemoDataset(category="disc", split="test", image_size=48, n_test_normal=4, n_test_anomalous=0)
    changed = (a[3].image - normal[3].image).abs().amax(0) > 1e-6  # same index and seed: only the defect differs
    assert changed.sum() > 0
    assert len(DemoDataset(split="train", n_train=3)) == 3 * len(DEMO_CATEGORIES)


def test_demo_written_in_mvtec_layout_reads_back(tmp_path) -> None:
    write_demo_dataset(tmp_path, ["weave"], image_size=32, n_train=2, n_test_normal=1, n_test_anomalous=2)
    test = MVTecAD(tmp_path, "weave", "test", image_size=32)
    assert sorted(r.label for r in test.records) == [0, 1, 1]
    original = DemoDataset(category="weave", split="test", image_size=32, n_test_normal=1, n_test_anomalous=2)
    by_name = {"/".join(r.path.split("/")[-2:]).split(".")[0]: i for i, r in enumerate(test.records)}
    for i, record in enumerate(original.records):
        reread = test[by_name["/".join(record.path.split("/")[-2:])]]
        assert (reread.image - original[i].image).abs().max() <= 1 / 255 + 1e-6
        assert torch.equal(reread.mask, original[i].mask)
