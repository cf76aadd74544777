"""EfficientAD (its conformance runs in test_conformance.py): size and teacher errors, the penalty substitute, the distill command, the losses."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file

from ad_core.backbones import MissingWeightsError, WeightsMismatchError
from ad_core.building import build_model
from ad_core.data.synthetic import write_demo_dataset
from ad_core.runner import run_one
from ad_kd.efficientad import model as model_module
from ad_kd.efficientad.model import hard_feature_loss, quantile
from ad_kd.efficientad.networks import MIN_IMAGE_SIZE, pdn_output_size
from ad_kd.efficientad.penalty import FolderPenalty
from ad_kd.efficientad.fitting import held_out

SIZE = 48  # above the 33 px minimum, and small enough for a shared CPU


def write_images(folder, count: int, size: int = 40) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def test_paper_output_sizes() -> None:
    """256 px gives the paper's 64x64 feature map (56x56 without padding); the autoencoder matches it."""
    assert pdn_output_size(256) == 64 and pdn_output_size(256, padding=False) == 56
    model, _ = build_model("efficientad-medium", pretrained=False, image_size=64)
    x = torch.rand(1, 3, 64, 64)
    assert model.teacher(x).shape == (1, 384, 16, 16)
    assert model.student(x).shape == (1, 768, 16, 16)
    assert model.ae(x).shape == (1, 384, 16, 16)


def test_images_below_the_minimum_size_are_refused() -> None:
    with pytest.raises(ValueError, match=f"at least {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE}"):
        build_model("efficientad", pretrained=False, image_size=MIN_IMAGE_SIZE - 1)
    model, _ = build_model("efficientad", pretrained=False, image_size=64)
    with pytest.raises(ValueError, match="at least 64x64"):
        model.raw_maps(torch.rand(1, 3, 40, 40))


def test_missing_teacher_names_both_ways_out() -> None:
    with pytest.raises(MissingWeightsError, match="teacher_weights=.*efficientad-distill"):
        build_model("efficientad", image_size=64)


def test_hard_feature_loss_averages_the_top_quantile() -> None:
    distance = torch.arange(10_000, dtype=torch.float32).requires_grad_(True)
    loss = hard_feature_loss(distance, 0.999)
    assert loss.item() == pytest.approx(np.arange(9990, 10_000).mean())
    loss.backward()
    assert torch.count_nonzero(distance.grad) == 10 and distance.grad[-10:].eq(0.1).all()


def test_quantile_beyond_torch_limit_matches_torch(monkeypatch) -> None:
    values = torch.rand(5000)
    expected = torch.quantile(values, 0.995)
    monkeypatch.setattr(model_module, "QUANTILE_LIMIT", 100)
    torch.testing.assert_close(quantile(values, 0.995), expected)


def test_held_out_images_are_a_seeded_fraction() -> None:
    paths = [f"p{i}" for i in range(20)]
    torch.manual_seed(0)
    first = held_out(paths, 0.1)
    torch.manual_seed(0)
    assert held_out(paths, 0.1) == first and len(first) == 2
    assert held_out(["only"], 0.1) == set()


def test_penalty_folder_images(tmp_path) -> None:
    write_images(tmp_path / "imagenet" / "class_a", 3)
    penalty = FolderPenalty(tmp_path / "imagenet").sample(torch.rand(2, 3, SIZE, SIZE))
    assert penalty.shape == (2, 3, SIZE, SIZE) and 0 <= penalty.min() and penalty.max() <= 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no images"):
        FolderPenalty(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        FolderPenalty(tmp_path / "missing")


def test_penalty_substitute_is_warned_and_noted_in_results(tmp_path) -> None:
    root = write_demo_dataset(tmp_path / "data", "weave", image_size=SIZE, n_train=5, n_test_normal=2,
                              n_test_anomalous=2)
    with pytest.warns(UserWarning, match="no imagenet_dir"):
        result = run_one("mvtec", "weave", "efficientad", root=root, output_dir=tmp_path / "out", pretrained=False,
                         image_size=SIZE, max_steps=2, write_maps=False, device="cpu")
    run = json.loads((result.output_dir / "results.json").read_text())["run"]
    assert any("no imagenet_dir" in note for note in run["notes"])
    assert "no imagenet_dir" in (result.output_dir / "results.txt").read_text()


def test_distill_command_writes_a_teacher_the_model_loads(tmp_path) -> None:
    from ad_core.cli import main

    write_images(tmp_path / "images" / "a", 4)
    out = tmp_path / "teacher.safetensors"
    result = CliRunner().invoke(main, ["efficientad-distill", "--images", str(tmp_path / "images"), "--out", str(out),
                                       "--backbone", "resnet18", "--random-backbone", "--steps", "2",
                                       "--batch-size", "2", "--image-size", "40"])
    assert result.exit_code == 0, result.output
    saved = load_file(str(out))
    model, _ = build_model("efficientad", image_size=SIZE, teacher_weights=str(out))
    own = model.teacher.state_dict()
    assert set(saved) == set(own)
    for key, tensor in saved.items():
        assert torch.equal(own[key], tensor), key
    with pytest.raises(WeightsMismatchError, match="small or medium"):
        build_model("efficientad-medium", image_size=SIZE, teacher_weights=str(out))
    out.unlink()  # how a checkpoint is rebuilt (pretrained=False): the teacher file is not needed any more
    build_model("efficientad", image_size=SIZE, teacher_weights=str(out), pretrained=False)
