"""The validation source: every decision a run stores is made on it, never on the test split."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ad_core import train
from ad_core.data import DemoDataset
from ad_core.types import Sample, collate
from ad_core.validation import draw_validation_defects, validation_split


def _sets(size: int = 32):
    return (DemoDataset(category="weave", split="train", image_size=size),
            DemoDataset(category="weave", split="test", image_size=size))


def test_holdout_is_seeded_disjoint_and_labelled() -> None:
    train_set, test_set = _sets()
    split = validation_split(train_set, test_set, seed=3)
    again = validation_split(train_set, test_set, seed=3)
    other = validation_split(train_set, test_set, seed=4)
    held = split.info["held_out"]
    assert len(held) == 4 and len(split.train) == 36 and split.test is test_set  # 10 % of 40
    assert set(held).isdisjoint(split.train.indices) and held == again.info["held_out"] != other.info["held_out"]
    samples = [split.validation[i] for i in range(len(split.validation))]
    assert [s.label for s in samples] == [0, 1] * 4
    for normal, defect in zip(samples[::2], samples[1::2]):
        assert normal.mask.sum() == 0 and defect.mask.sum() > 0 and defect.defect_type == "synthetic"
        changed = (defect.image - normal.image).abs().amax(0) > 0
        assert changed.any() and not (changed & (defect.mask == 0)).any()  # only masked pixels changed
    assert torch.equal(split.validation[1].image, again.validation[1].image)


def test_holdout_keeps_a_few_images_and_refuses_an_empty_training_set() -> None:
    for n_train, held in ((80, 8), (20, 4), (6, 3), (2, 1)):  # 10 %, at least 4, at most half
        data = DemoDataset(category="weave", split="train", image_size=32, n_train=n_train)
        split = validation_split(data, data)
        assert len(split.validation) == 2 * held and len(split.train) == n_train - held
    one = DemoDataset(category="weave", split="train", image_size=32, n_train=1)
    with pytest.raises(ValueError, match="too few to hold out"):
        validation_split(one, one)


def test_test_split_is_stratified_and_the_rest_is_tested() -> None:
    train_set, test_set = _sets()
    split = validation_split(train_set, test_set, source="test_split", fraction=0.2, seed=1)
    held = split.info["held_out"]
    assert split.train is train_set and sorted(held + split.test.indices) == list(range(20))
    assert [test_set.records[i].label for i in held].count(1) == 2 == split.info["normal_images"]
    assert "not used for validation" in split.info["test_note"]
    with pytest.raises(ValueError, match="unknown validation source"):
        validation_split(train_set, test_set, source="test")


def test_folder_with_and_without_labelled_defects(tmp_path) -> None:
    train_set, test_set = _sets()
    folder = tmp_path / "val"
    (folder / "normal").mkdir(parents=True)
    for i in range(3):
        Image.fromarray((train_set[i].image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(
            folder / "normal" / f"{i}.png")
    split = validation_split(train_set, test_set, folder=folder, image_size=32)
    assert len(split.validation) == 6 and split.info["defects"].startswith("synthetic")
    (folder / "abnormal").mkdir()
    (folder / "mask").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(folder / "abnormal" / "a.png")
    Image.fromarray(np.full((32, 32), 255, np.uint8)).save(folder / "mask" / "a_mask.png")
    labelled = validation_split(train_set, test_set, folder=folder, image_size=32)
    assert len(labelled.validation) == 4 and labelled.info["defects"] == "labelled"
    assert labelled.validation[3].label == 1 and labelled.validation[3].mask.sum() == 32 * 32
    with pytest.raises(ValueError, match="no images in"):
        validation_split(train_set, test_set, folder=tmp_path / "missing")


def test_drawn_defects_come_with_exact_masks() -> None:
    images = torch.rand(3, 3, 48, 48) * 0.2 + 0.4
    drawn, masks = draw_validation_defects(images, np.random.default_rng(0))
    assert drawn.shape == images.shape and masks.shape == (3, 48, 48)
    changed = (drawn - images).abs().amax(1) > 1e-6
    assert torch.equal(changed, masks.bool())


def test_collate_flags_unknown_masks() -> None:
    image = torch.zeros(3, 4, 4)
    batch = collate([Sample(image, 0, None, "n", "c"), Sample(image, 1, None, "a", "c"),
                     Sample(image, 1, torch.ones(4, 4), "b", "c")])
    assert batch.mask_known.tolist() == [True, False, True]  # a normal image's empty mask is known
    assert collate([Sample(image, 1, None, "a", "c")]).mask is None


def test_early_stopping_validates_on_the_validation_source_only(tiny_plugin, outputs, monkeypatch) -> None:
    from ad_core.training import gradient

    seen: list[str] = []
    fit = gradient.GradientTrainer.fit

    def spy(self, model, train_batches, val=None, *, generator=None):
        assert val is not None
        seen.extend(path for batch in val for path in batch.path)
        return fit(self, model, train_batches, val, generator=generator)

    monkeypatch.setattr(gradient.GradientTrainer, "fit", spy)
    (run,) = train("demo", "weave", "tiny-ae", verbose=False, num_epochs=3, image_size=32, write_maps=False,
                   early_stopping_patience=1)
    assert seen and all("/train/" in p for p in seen) and any(p.endswith("#synthetic") for p in seen)
    results = json.loads((run.output_dir / "results.json").read_text())
    stopping = results["run"]["early_stopping"]
    assert 1 <= stopping["best_epoch"] <= 3 and "validation" in stopping["selected_on"]
    assert results["validation"]["normal_images"] == 4 and results["validation"]["anomalous_images"] == 4
    assert {"image_threshold", "score_range", "pixel_threshold", "map_range"} <= set(results["decisions"])
    assert all("validation" in d["selected_on"] for d in results["decisions"].values())


def test_a_test_split_validation_is_stated_and_the_rest_is_tested(tiny_plugin, outputs) -> None:
    (run,) = train("demo", "weave", "tiny-ae", verbose=False, num_epochs=1, image_size=32, write_maps=False,
                   validation="test_split", validation_fraction=0.2)
    results = json.loads((run.output_dir / "results.json").read_text())
    assert results["run"]["test_images"] == 16 and "not used for validation" in results["run"]["test_split"]
    assert results["validation"]["source"] == "test_split"
    assert "test split" in results["threshold"]["selected_on"]
    assert "not used for validation" in (run.output_dir / "results.txt").read_text()
