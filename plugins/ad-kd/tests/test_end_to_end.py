"""The seed's calls, `train(dataset, category, "stfpm", num_epochs=...)`, and the CLI, end to end on the demo set."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ad_core import load_model, train
from ad_core.cli import main
from ad_core.data import DEMO_CATEGORIES, DemoDataset
from ad_core.types import collate

TINY = {"image_size": 64, "batch_size": 16, "pretrained": False}


@pytest.fixture(scope="module")
def two_categories(tmp_path_factory):
    out = tmp_path_factory.mktemp("outputs")
    return out, train("demo", ["weave", "grain"], "stfpm", num_epochs=2, output_dir=out, verbose=False, **TINY)


def test_train_on_a_list_of_categories_writes_one_run_each(two_categories) -> None:
    out, runs = two_categories
    assert [(r.dataset, r.category, r.model) for r in runs] == [("demo", "weave", "stfpm"), ("demo", "grain", "stfpm")]
    for run in runs:
        assert run.output_dir == out / "demo" / run.category / "stfpm"
        for name in ["model.safetensors", "model.json", "results.json", "results.txt", "histogram.png"]:
            assert (run.output_dir / name).is_file(), name
        assert run.run["epochs"] == 2 and run.run["image_size"] == 64
        assert 0.0 <= run.image_auroc <= 1.0 and 0.0 <= run.pixel_auroc <= 1.0
        meta = json.loads((run.output_dir / "model.json").read_text())
        assert meta["plugin"] == "ad-kd" and meta["hyperparameters"]["backbone"] == "resnet18"


def test_saved_run_reloads_and_predicts_identically(two_categories) -> None:
    _, runs = two_categories
    data = DemoDataset(category="weave", split="test", image_size=64)
    images = collate([data[i] for i in range(4)]).image
    first, second = load_model(runs[0].output_dir), load_model(runs[0].output_dir)
    assert first.predict(images).anomaly_map.shape == (4, 64, 64)
    assert (first.predict(images).score == second.predict(images).score).all()


def test_all_means_every_demo_category(tmp_path) -> None:
    runs = train("demo", "all", "fre-r18", num_epochs=1, output_dir=tmp_path, verbose=False, write_maps=False,
                 **TINY)
    assert [r.category for r in runs] == list(DEMO_CATEGORIES)
    assert all((r.output_dir / "model.safetensors").is_file() for r in runs)


def test_cli_train_on_two_categories(tmp_path) -> None:
    result = CliRunner().invoke(main, [
        "train", "demo", "weave,grain", "stfpm", "--epochs", "2", "--image-size", "64", "--batch-size", "16",
        "--set", "pretrained=false", "--output-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for category in ("weave", "grain"):
        results = json.loads((tmp_path / "demo" / category / "stfpm" / "results.json").read_text())
        assert 0.0 <= results["image"]["auroc"] <= 1.0
    assert "weave" in result.output and "grain" in result.output
