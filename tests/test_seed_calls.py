"""The seed's own calls (its README §4.2, §4.3, §8.1-8.3, §11.1-11.3), as written, on generated data.

Each call keeps the seed's positional/keyword form, dataset, category and model names; the only additions are
what makes it tiny (32 px, `pretrained=False`, one epoch or a few steps, a small backbone where the seed's is
large). Names of models the project does not have yet are checked to fail with a clear error.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from ad_core import set_globals, train, train_models
from ad_core.building import resolve_config
from ad_core.data import write_demo_dataset
from ad_core.plugins import UnknownModelError
from ad_core.settings import settings
from ad_core.types import Batch

TINY = {"image_size": 32, "pretrained": False}
FAST_BACKBONE = {"backbone": "resnet18", "layers": ["layer1", "layer2"]}  # PatchCore's default is WRN50
EFFICIENTAD_TINY = {"image_size": 64, "pretrained": False, "max_steps": 2, "write_maps": False}


def _mvtec(root: Path, names: dict[str, str]) -> None:
    """An MVTec-layout folder whose categories carry the seed's names (demo categories renamed)."""
    write_demo_dataset(root / "tmp", list(names), image_size=32, n_train=4, n_test_normal=2, n_test_anomalous=2)
    for demo_name, name in names.items():
        shutil.move(str(root / "tmp" / demo_name), str(root / name))
    shutil.rmtree(root / "tmp")


def _custom(root: Path, categories: list[str]) -> None:
    """A custom dataset in the simple layout: `<category>/{normal, abnormal, mask}`, metadata.csv written on use."""
    source = root.parent / f"{root.name}-mvtec"
    _mvtec(source, dict(zip(["weave", "disc"], categories)))
    for cat in categories:
        for i, image in enumerate(sorted((source / cat / "train" / "good").glob("*.png"))
                                  + sorted((source / cat / "test" / "good").glob("*.png"))):
            (root / cat / "normal").mkdir(parents=True, exist_ok=True)
            shutil.copy(image, root / cat / "normal" / f"n{i}.png")
        for image in sorted(p for p in (source / cat / "test").rglob("*.png") if p.parent.name != "good"):
            stem = f"{image.parent.name}_{image.stem}"
            (root / cat / "abnormal").mkdir(parents=True, exist_ok=True)
            (root / cat / "mask").mkdir(parents=True, exist_ok=True)
            shutil.copy(image, root / cat / "abnormal" / f"{stem}.png")
            shutil.copy(source / cat / "ground_truth" / image.parent.name / f"{image.stem}_mask.png",
                        root / cat / "mask" / f"{stem}_mask.png")


@pytest.fixture
def seed_dirs(tmp_path, monkeypatch):
    """§4.2: `set_globals(dataset_dir=..., backbone_dir=..., output_dir=...)` over generated datasets."""
    for key in ("dataset_dir", "backbone_dir", "output_dir", "pin_memory", "persistent_workers", "num_workers",
                "seed"):
        monkeypatch.setattr(settings, key, getattr(settings, key))  # restored after the test
    datasets = tmp_path / "datasets"
    _mvtec(datasets / "mvtec", {"weave": "bottle", "disc": "wood", "grain": "grid", "plate": "tile"})
    set_globals(dataset_dir=str(datasets), backbone_dir=str(tmp_path / "backbones"),
                output_dir=str(tmp_path / "outputs"))
    return tmp_path


def _results(run) -> dict:
    return json.loads((run.output_dir / "results.json").read_text())


def test_train_positional_and_seed_keywords(seed_dirs, capsys) -> None:
    """§4.2 `train("mvtec", "bottle", "stfpm", num_epochs=50)` and §11.3's keyword form with `img_size`."""
    (run,) = train("mvtec", "bottle", "stfpm", num_epochs=1, **TINY)
    assert run.output_dir == seed_dirs / "outputs" / "mvtec" / "bottle" / "stfpm"
    assert f"outputs written to {run.output_dir}" in capsys.readouterr().out
    (run,) = train(dataset_type="mvtec", category="bottle", model_type="stfpm", num_epochs=1, batch_size=32,
                   img_size=48, normalize=True, pretrained=False)
    assert run.run["image_size"] == 48 and run.run["epochs"] == 1
    assert json.loads((run.output_dir / "model.json").read_text())["normalize"] is True


def test_memory_models_with_num_epochs_and_several_categories(seed_dirs) -> None:
    """§8.1 `padim`/`patchcore` with `num_epochs=1`, a category list and `"all"`."""
    (patchcore,) = train("mvtec", "bottle", "patchcore", num_epochs=1, verbose=False, **TINY, **FAST_BACKBONE)
    assert patchcore.model == "patchcore" and list((patchcore.output_dir / "maps").glob("*.png"))
    runs = train("mvtec", ["bottle", "wood", "grid"], "padim", num_epochs=1, verbose=False, write_maps=False,
                 **TINY)
    assert [(r.category, r.model) for r in runs] == [("bottle", "padim"), ("wood", "padim"), ("grid", "padim")]
    runs = train("mvtec", "all", "padim", num_epochs=1, verbose=False, write_maps=False, **TINY)
    assert sorted(r.category for r in runs) == ["bottle", "grid", "tile", "wood"]


def test_efficientad_small_with_num_epochs_and_normalize_false(seed_dirs) -> None:
    """§8.1 `train("mvtec", "bottle", "efficientad-small", num_epochs=20, normalize=False)`."""
    with pytest.warns(UserWarning, match="imagenet_dir"):
        (run,) = train("mvtec", "bottle", "efficientad-small", num_epochs=20, normalize=False, verbose=False,
                       **EFFICIENTAD_TINY)
    assert run.model == "efficientad-small" and run.run["steps"] == 2  # max_steps=2 ends it before 20 epochs
    assert 0.0 <= _results(run)["image"]["auroc"] <= 1.0


def test_train_models_keywords(seed_dirs) -> None:
    """§4.3/§8.3 `train_models(dataset_type=..., categories=[...], models=[...])`."""
    runs = train_models(dataset_type="mvtec", categories=["bottle", "wood"], models=["padim", "stfpm"],
                        num_epochs=1, verbose=False, write_maps=False, **TINY)
    assert [(r.category, r.model) for r in runs] == [("bottle", "padim"), ("bottle", "stfpm"),
                                                     ("wood", "padim"), ("wood", "stfpm")]


def test_custom_datasets_by_name_and_several_datasets(seed_dirs) -> None:
    """§8.2: a custom dataset by name, `"all"` and a list of datasets with a list of categories."""
    datasets = seed_dirs / "datasets"
    _custom(datasets / "your_dataset_name", ["pattern1", "pattern2"])
    _custom(datasets / "dataset_A", ["pattern1", "pattern2"])
    _custom(datasets / "dataset_B", ["pattern1", "pattern2"])
    (run,) = train("your_dataset_name", "pattern1", "stfpm", num_epochs=1, verbose=False, write_maps=False, **TINY)
    assert (datasets / "your_dataset_name" / "pattern1" / "metadata.csv").is_file()
    assert _results(run)["pixel"] is not None  # the masks were found by their `<stem>_mask` names
    runs = train("your_dataset_name", "all", "padim", num_epochs=1, verbose=False, write_maps=False, **TINY)
    assert [r.category for r in runs] == ["pattern1", "pattern2"]
    runs = train(["dataset_A", "dataset_B"], ["pattern1", "pattern2"], "padim", num_epochs=1, verbose=False,
                 write_maps=False, **TINY)
    assert [(r.dataset, r.category) for r in runs] == [("dataset_A", "pattern1"), ("dataset_A", "pattern2"),
                                                       ("dataset_B", "pattern1"), ("dataset_B", "pattern2")]
    assert all(r.output_dir.parts[-3] == r.dataset for r in runs)


@pytest.mark.parametrize(("name", "backbone"), [
    ("fastflow-resnet50", "wide_resnet50_2"),
    ("fastflow-cait", "cait_m48_448"),
    ("fastflow-deit", "deit_base_distilled_patch16_384"),
    ("cflow-resnet18", "resnet18"),
    ("cflow-resnet50", "resnet50"),
    ("uflow-resnet50", "wide_resnet50_2"),
    ("uflow-mcait", "mcait"),
])
def test_seed_variant_names_resolve(name: str, backbone: str) -> None:
    """§8.1 and §3.2's variants: FastFlow 3, CFlow 2, U-Flow 2 (EfficientAD's two are trained above)."""
    config = resolve_config(name)
    assert config.name == name and config.hyperparameters["backbone"] == backbone


def test_seed_variant_trains(seed_dirs) -> None:
    """`fastflow-resnet50` trains (on a small backbone here: the name's WRN50 is too large for a unit test)."""
    (run,) = train("mvtec", "tile", "fastflow-resnet50", num_epochs=1, verbose=False, write_maps=False,
                   backbone="resnet18", **TINY)
    assert run.model == "fastflow-resnet50"


@pytest.mark.parametrize("name", ["dinomaly-small-224", "dinomaly-base-224", "dinomaly-large-224", "uninet"])
def test_models_not_built_yet_are_a_clear_error(seed_dirs, name: str) -> None:
    with pytest.raises(UnknownModelError, match=name):
        train("mvtec", "bottle", name, num_epochs=15)


def test_set_globals_of_section_11_1(seed_dirs, capsys) -> None:
    """§11.1: every keyword is accepted, `show_globals` prints them, and the loader settings reach DataLoader."""
    from ad_core.runner import make_loader

    set_globals(dataset_dir=str(seed_dirs / "datasets"), backbone_dir=str(seed_dirs / "backbones"),
                output_dir=str(seed_dirs / "outputs"), seed=42, num_workers=2, pin_memory=True,
                persistent_workers=True, show_globals=True)
    printed = capsys.readouterr().out
    assert "pin_memory: True" in printed and "persistent_workers: True" in printed and "num_workers: 2" in printed
    loader = make_loader(list(range(4)), 2, shuffle=False, seed=0)
    assert loader.num_workers == 2 and loader.persistent_workers
    assert loader.pin_memory == torch.cuda.is_available()  # pinning only helps (and only works) with CUDA


def test_batch_pin_memory_pins_every_tensor(monkeypatch) -> None:
    """A DataLoader with `pin_memory=True` calls `Batch.pin_memory()`; every tensor is pinned, the rest kept."""
    pinned: list[tuple[int, ...]] = []

    def fake_pin(self: torch.Tensor) -> torch.Tensor:  # CUDA-free stand-in for page-locking
        pinned.append(tuple(self.shape))
        return self.clone()

    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    batch = Batch(torch.rand(2, 3, 8, 8), torch.tensor([0, 1]), torch.zeros(2, 8, 8), ["a", "b"], ["c", "c"],
                  ["good", "scratch"])
    out = batch.pin_memory()
    assert sorted(pinned) == sorted([(2, 3, 8, 8), (2,), (2, 8, 8)])
    assert out.path == ["a", "b"] and out.defect_type == ["good", "scratch"] and torch.equal(out.image, batch.image)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs CUDA")
def test_loader_pins_batches_with_cuda(seed_dirs) -> None:
    from ad_core.data import get_dataset
    from ad_core.runner import make_loader

    set_globals(pin_memory=True)
    data = get_dataset("mvtec", "bottle", "test", image_size=32)
    batch = next(iter(make_loader(data, 2, shuffle=False, seed=0)))
    assert batch.image.is_pinned() and batch.label.is_pinned() and batch.mask.is_pinned()
