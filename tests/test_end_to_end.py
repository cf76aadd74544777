"""A whole run through the public API and the CLI, with the test-only gradient model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from ad_core import load_model, train
from ad_core.checkpoint import CheckpointError
from ad_core.cli import main
from ad_core.data import DemoDataset
from ad_core.reports.overlay import HEADER, SIDE


@pytest.fixture
def run(tiny_plugin, outputs):
    (result,) = train("demo", "weave", "tiny-ae", verbose=False, num_epochs=2, image_size=32)
    return result


def test_run_writes_every_output(run) -> None:
    out = run.output_dir
    assert out == run.output_dir and out.parts[-3:] == ("demo", "weave", "tiny-ae")
    for name in ["model.safetensors", "model.json", "results.json", "results.txt", "histogram.png", "roc.png"]:
        assert (out / name).is_file(), name
    assert list((out / "maps").glob("*.png"))
    results = json.loads((out / "results.json").read_text())
    assert 0.0 <= results["image"]["auroc"] <= 1.0
    assert set(results["thresholds"]) == {"normal_fpr", "mean_ksigma"}
    assert set(results["oracle_thresholds"]) == {"f1_percentile", "f1_uniform", "roc_youden", "percentile_95"}
    assert "Confusion Matrix" in (out / "results.txt").read_text()
    meta = json.loads((out / "model.json").read_text())
    assert meta["model"] == "tiny-ae" and meta["hyperparameters"]["width"] == 8
    assert meta["threshold"]["value"] == results["threshold"]["value"]
    assert results["threshold"]["method"] == "normal_fpr" and "validation" in results["threshold"]["selected_on"]


def test_checkpoint_reloads_with_identical_predictions(run) -> None:
    data = DemoDataset(category="weave", split="test", image_size=32)
    images = torch.stack([data[i].image for i in range(6)])
    first, second = load_model(run.output_dir), load_model(run.output_dir)
    assert torch.equal(first.predict(images).score, second.predict(images).score)
    detection = first.detect(images)
    assert ((detection.normalized_score >= 0) & (detection.normalized_score <= 1)).all()
    assert torch.equal(detection.label, (detection.score >= first.post.threshold).long())


def test_checkpoint_from_another_model_is_refused(run) -> None:
    with pytest.raises(CheckpointError, match="not 'patchcore'"):
        load_model(run.output_dir, expected_model="patchcore")


def test_damaged_checkpoint_is_a_clear_error(run) -> None:
    (run.output_dir / "model.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="damaged"):
        load_model(run.output_dir)


def test_cli_predict_on_a_folder(run, tmp_path) -> None:
    folder = tmp_path / "incoming"
    folder.mkdir()
    data = DemoDataset(category="weave", split="test", image_size=48)
    for i in (0, len(data) - 1):
        array = (data[i].image.permute(1, 2, 0).numpy() * 255).astype("uint8")
        Image.fromarray(array).save(folder / f"img{i}.png")
    (folder / "notes.txt").write_text("not an image")
    result = CliRunner().invoke(main, ["predict", str(run.output_dir), str(folder), "--json",
                                       "--output", str(tmp_path / "maps")])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert len(rows) == 2 and all(0.0 <= r["normalized_score"] <= 1.0 for r in rows)
    # one overlay per image, named after it, at the image's own size (48 px, not the model's 32) plus the scale
    assert sorted(Path(r["map"]).name for r in rows) == [f"img{i}_anomaly.png" for i in (0, len(data) - 1)]
    assert all(Image.open(r["map"]).size == (48 + SIDE, 48 + HEADER) for r in rows)


def test_cli_test_command_evaluates_a_checkpoint(run, tmp_path) -> None:
    result = CliRunner().invoke(main, ["test", str(run.output_dir), "--dataset", "demo", "--category", "weave",
                                       "--output-dir", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "eval" / "results.json").is_file()


def test_corrupt_image_to_predict_names_the_file(run, tmp_path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG garbage")
    result = CliRunner().invoke(main, ["predict", str(run.output_dir), str(bad)])
    assert result.exit_code == 1 and "broken.png" in result.output


def test_lists_of_categories_and_variants(tiny_plugin, outputs) -> None:
    runs = train("demo", ["weave", "disc"], ["tiny-ae", "tiny-ae-wide"], verbose=False, num_epochs=1,
                 image_size=32, write_maps=False)
    assert [(r.category, r.model) for r in runs] == [("weave", "tiny-ae"), ("weave", "tiny-ae-wide"),
                                                    ("disc", "tiny-ae"), ("disc", "tiny-ae-wide")]
    assert load_model(runs[-1].output_dir).model.encoder[0].out_channels == 16


def test_demo_warns_once_without_weights_and_prints_a_table(tiny_plugin, tmp_path) -> None:
    result = CliRunner().invoke(main, ["demo", "--model", "tiny-ae-pretrained", "--categories", "weave,disc",
                                       "--image-size", "32", "--output-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.output.count("random weights were used") == 1
    assert "mean" in result.output and "tiny-ae-pretrained" in result.output
    assert (tmp_path / "demo" / "disc" / "tiny-ae-pretrained" / "model.safetensors").is_file()


def test_missing_weights_is_an_error_unless_allowed(tiny_plugin, outputs) -> None:
    from ad_core.backbones import MissingWeightsError

    with pytest.raises(MissingWeightsError, match="backbones/tiny.safetensors"):
        train("demo", "weave", "tiny-ae-pretrained", verbose=False, num_epochs=1, image_size=32)
