"""Unified (multi-class) training: one model on two demo categories, evaluated per category and on the mean."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ad_core import load_model, train
from ad_core.benchmarking import benchmark
from ad_core.benchmarking.cells import _measurements
from ad_core.benchmarking.leaderboard import UNIFIED_SUFFIX, collect, summarize
from ad_core.cli import main
from ad_core.data import get_dataset
from ad_core.metrics.thresholds import normal_fpr_threshold
from ad_core.plugin_api import ModelSpec, hookimpl
from ad_core.plugins import register_plugin
from ad_core.runner import test_checkpoint as evaluate_checkpoint
from ad_core.specs import SpecError
from ad_core.unified import UnifiedTrainingError, run_unified, with_unified_defaults
from ad_core.validation import validation_split

CATEGORIES = ["weave", "disc"]
SIZE = 32
SEED = 7
# The demo set has 40 normal training images per category; the default holdout keeps 4 (10 %) of them.
TRAIN_PER_CATEGORY = 40 - 4


@pytest.fixture(scope="module")
def padim_run(tmp_path_factory):
    """PaDiM (random ResNet-18, 32 px) trained once on both categories."""
    out = tmp_path_factory.mktemp("unified")
    runs = train("demo", CATEGORIES, "padim", unified=True, verbose=False, image_size=SIZE, pretrained=False,
                 batch_size=16, seed=SEED, output_dir=out)
    return runs


def _folder(runs) -> Path:
    return Path(runs[0].run["unified_dir"])


def test_one_model_is_fitted_on_the_union_of_the_categories(padim_run) -> None:
    folder = _folder(padim_run)
    assert folder.parts[-2:] == ("unified-weave+disc", "padim")
    assert [r.category for r in padim_run] == CATEGORIES
    header = padim_run[0].run
    assert header["fit_images"] == 2 * TRAIN_PER_CATEGORY  # the images the feature-bank pass saw
    assert header["train_images_per_category"] == {c: TRAIN_PER_CATEGORY for c in CATEGORIES}
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("model.safetensors")) == \
        ["model.safetensors"]
    meta = json.loads((folder / "model.json").read_text())
    assert meta["trained_on"]["categories"] == CATEGORIES and meta["trained_on"]["images"] == 72


def test_every_category_has_its_own_outputs_and_the_run_reports_the_mean(padim_run) -> None:
    folder = _folder(padim_run)
    for run in padim_run:
        assert run.output_dir == folder / run.category
        for name in ("results.json", "results.txt", "scores.json", "histogram.png", "roc.png"):
            assert (run.output_dir / name).is_file(), (run.category, name)
        assert list((run.output_dir / "maps").glob("*.png"))
        scores = json.loads((run.output_dir / "scores.json").read_text())
        assert all(path.startswith(f"demo://{run.category}/") for path in scores["paths"])
    summary = json.loads((folder / "results.json").read_text())["unified"]
    per_category = [json.loads((folder / c / "results.json").read_text()) for c in CATEGORIES]
    assert summary["categories"]["disc"]["image_auroc"] == per_category[1]["image"]["auroc"]
    for key, field in (("image_auroc", "image"), ("pixel_auroc", "pixel")):
        assert summary["mean"][key] == pytest.approx(np.mean([r[field]["auroc"] for r in per_category]))
    text = (folder / "results.txt").read_text()
    assert all(line in text for line in ("weave ", "disc ", "mean "))


def test_each_category_is_thresholded_on_its_own_validation_images(padim_run) -> None:
    folder = _folder(padim_run)
    detector = load_model(folder)
    meta = detector.meta
    thresholds, all_normal = {}, []
    for category in CATEGORIES:
        split = validation_split(get_dataset("demo", category, "train", image_size=SIZE),
                                 get_dataset("demo", category, "test", image_size=SIZE), seed=SEED)
        normals = [split.validation[i].image for i in range(0, len(split.validation), 2)]  # even: the normal copy
        scores = detector.predict(torch.stack(normals)).score.numpy()
        expected = normal_fpr_threshold(scores, 0.01)["value"]
        all_normal.append(scores)
        saved = json.loads((folder / category / "results.json").read_text())["threshold"]
        assert saved["method"] == "normal_fpr" and saved["value"] == pytest.approx(expected, rel=1e-5)
        assert meta["unified"]["decisions"][category]["threshold"]["value"] == saved["value"]
        thresholds[category] = saved["value"]
    assert not math.isclose(thresholds["weave"], thresholds["disc"])
    union = meta["threshold"]["value"]  # what a detector of unknown category uses: both categories' normals
    assert union == pytest.approx(float(detector.post.threshold))
    assert union == pytest.approx(normal_fpr_threshold(np.concatenate(all_normal), 0.01)["value"], rel=1e-5)


def test_a_unified_checkpoint_tests_one_category_with_that_categorys_threshold(padim_run, tmp_path) -> None:
    folder = _folder(padim_run)
    decisions = json.loads((folder / "model.json").read_text())["unified"]["decisions"]
    result = evaluate_checkpoint(folder, "demo", "disc", output_dir=tmp_path / "disc")
    assert result.results["threshold"]["value"] == pytest.approx(decisions["disc"]["threshold"]["value"])
    assert result.image_auroc == pytest.approx(padim_run[1].image_auroc)
    runner = CliRunner()
    cli = runner.invoke(main, ["test", str(folder), "--dataset", "demo", "--category", "weave",
                               "--output-dir", str(tmp_path / "weave")])
    assert cli.exit_code == 0, cli.output
    saved = json.loads((tmp_path / "weave" / "results.json").read_text())
    assert saved["threshold"]["value"] == pytest.approx(decisions["weave"]["threshold"]["value"])


def test_a_unified_cell_is_listed_per_category_with_the_mean(padim_run) -> None:
    folder = _folder(padim_run)
    record = {"status": "ok", "dataset": "demo", "category": folder.parent.name, "model": "padim",
              "unified": CATEGORIES, **_measurements(folder, {})}
    assert set(record["categories"]) == set(CATEGORIES)
    (folder / "cell.json").write_text(json.dumps(record))
    rows = collect(folder.parents[2])
    assert [(r["category"], r["model"]) for r in rows] == [(c, "padim" + UNIFIED_SUFFIX) for c in CATEGORIES]
    assert rows[1]["image_auroc"] == padim_run[1].image_auroc
    (entry,) = summarize(rows)["demo"]
    assert entry["image_auroc"]["mean"] == pytest.approx(np.mean([r.image_auroc for r in padim_run]))


def test_cli_unified_trains_a_gradient_model_on_both_categories(tiny_plugin, tmp_path) -> None:
    result = CliRunner().invoke(main, ["train", "demo", "weave,disc", "tiny-ae", "--unified", "--image-size", "32",
                                       "--epochs", "1", "--batch-size", "8", "--output-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "demo" / "unified-weave+disc" / "tiny-ae"
    header = json.loads((folder / "results.json").read_text())["run"]
    assert header["steps"] == math.ceil(2 * TRAIN_PER_CATEGORY / 8)  # one epoch over the union, batches of 8
    assert "mean" in result.output and (folder / "disc" / "results.json").is_file()


class RefusingPlugin:
    @staticmethod
    @hookimpl
    def adcore_register_models(register) -> None:
        register(ModelSpec(name="tiny-per-category", paradigm="test", factory="tiny_plugin:TinyAE",
                           defaults={"image_size": 32, "num_epochs": 1, "unified_num_epochs": 2},
                           unified=False, unified_reason="its statistics are fitted per category."))


@pytest.fixture
def refusing_plugin():
    unregister = register_plugin(RefusingPlugin(), "refusing-plugin")
    yield
    unregister()


def test_a_model_that_cannot_be_unified_is_a_clear_error(refusing_plugin, tmp_path) -> None:
    with pytest.raises(UnifiedTrainingError, match="fitted per category"):
        train("demo", CATEGORIES, "tiny-per-category", unified=True, verbose=False, output_dir=tmp_path)
    with pytest.raises(UnifiedTrainingError, match="cannot be trained unified"):
        benchmark("tiny-per-category", "demo", CATEGORIES, output=tmp_path / "bench", unified=True, verbose=False)
    result = CliRunner().invoke(main, ["train", "demo", "weave,disc", "tiny-per-category", "--unified",
                                       "--output-dir", str(tmp_path)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "cannot be trained unified" in result.output and "fitted per category" in result.output
    assert not (tmp_path / "demo").exists()
    listed = json.loads(CliRunner().invoke(main, ["list-models", "--json", "--paradigm", "test"]).output)["models"]
    assert [(m["unified"], m.get("unified_reason")) for m in listed if m["name"] == "tiny-per-category"] == \
        [(False, "its statistics are fitted per category.")]


def test_unified_needs_two_categories_and_per_category_validation(tiny_plugin, tmp_path) -> None:
    with pytest.raises(UnifiedTrainingError, match="two or more"):
        run_unified("demo", ["weave", "weave"], "tiny-ae", output_dir=tmp_path)
    with pytest.raises(UnifiedTrainingError, match="validation_dir"):
        run_unified("demo", CATEGORIES, "tiny-ae", output_dir=tmp_path, validation_dir=tmp_path)


def test_unified_defaults_apply_only_to_unified_runs_and_yield_to_the_user(refusing_plugin) -> None:
    from ad_core.building import resolve_config

    assert with_unified_defaults("tiny-per-category", {}) == {"num_epochs": 2}
    assert with_unified_defaults("tiny-per-category", {"epochs": 3}) == {"epochs": 3}
    config = resolve_config("tiny-per-category")  # a per-category build neither sees nor rejects the key
    assert config.run["num_epochs"] == 1 and "unified_num_epochs" not in config.hyperparameters


def test_a_spec_that_refuses_unified_training_must_say_why() -> None:
    with pytest.raises(SpecError, match="unified_reason"):
        ModelSpec(name="x", paradigm="test", factory="m:f", unified=False).validate()
    ModelSpec(name="x", paradigm="test", factory="m:f", unified=False, unified_reason="needs one class").validate()


def test_conformance_accepts_unified_defaults_of_known_keys_only() -> None:
    """`unified_<key>` passes the spec-defaults check when `<key>` is a factory parameter or run key, not otherwise."""
    from ad_core.specs import ModelSpec
    from ad_core.testing import ConformanceCase, ModelConformance

    def case(defaults: dict) -> ConformanceCase:
        return ConformanceCase("tiny-ae", ModelSpec(name="tiny-ae", paradigm="test", factory="tiny_plugin:TinyAE",
                                                    trainer="gradient", defaults=defaults))

    check = ModelConformance().test_spec_defaults_accepted_by_factory
    check(case({"unified_max_steps": 10, "unified_width": 16}))
    with pytest.raises(AssertionError, match="unified_widht"):
        check(case({"unified_widht": 16}))
