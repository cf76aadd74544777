"""A unified run's outputs beyond its training: predicting at one category's thresholds, the benchmark cell's
example maps per category, and ensembles built from a benchmark folder that holds unified cells."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from ad_core import build_ensemble, build_ensembles, load_model
from ad_core.benchmarking import child
from ad_core.benchmarking.cells import _measurements
from ad_core.benchmarking.examples import EXAMPLES_NAME, read_examples
from ad_core.benchmarking.figures import example_maps
from ad_core.benchmarking.leaderboard import UNIFIED_SUFFIX, collect
from ad_core.benchmarking.report import _example_folders, write_report
from ad_core.cli import main
from ad_core.data import get_dataset
from ad_core.ensemble import select_top
from ad_core.settings import settings
from ad_core.unified import UnknownCategoryError

CATEGORIES = ["weave", "disc"]
SIZE = 32
SEED = 7
COMMON = {"image_size": SIZE, "pretrained": False, "batch_size": 16, "seed": SEED, "write_maps": False}


def _cell(bench: Path, spec: dict) -> Path:
    """One benchmark cell run in this process as the grid's child runs it, with its `cell.json`."""
    out = child.run({"dataset": "demo", "output_dir": str(bench), "overrides": COMMON, "examples": 2, **spec})
    folder = Path(out["output_dir"])
    record = {"status": "ok", "dataset": "demo", "category": folder.parent.name, "model": "padim",
              **({"unified": spec["categories"]} if spec.get("categories") else {}), **_measurements(folder, out)}
    (folder / "cell.json").write_text(json.dumps(record))
    return folder


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    """A benchmark folder: PaDiM unified over weave and disc, and PaDiM per category on weave (32 px, random
    weights, same seed, so both hold out the same weave images)."""
    root = tmp_path_factory.mktemp("bench")
    progress = settings.progress  # the child sets it off for its process; this is the test's process
    try:
        _cell(root, {"model": "padim", "categories": CATEGORIES, "category": "unified-weave+disc"})
        _cell(root, {"model": "padim", "category": "weave"})
    finally:
        settings.progress = progress
    return root


@pytest.fixture(scope="module")
def unified_dir(bench) -> Path:
    return bench / "demo" / "unified-weave+disc" / "padim"


@pytest.fixture(scope="module")
def image_file(tmp_path_factory) -> Path:
    """A defective disc test image as a PNG file."""
    from PIL import Image

    test_set = get_dataset("demo", "disc", "test", image_size=SIZE)
    sample = next(test_set[i] for i in range(len(test_set)) if int(test_set[i].label) == 1)
    path = tmp_path_factory.mktemp("images") / "disc.png"
    Image.fromarray((sample.image.permute(1, 2, 0).numpy() * 255).round().astype("uint8")).save(path)
    return path


def _decisions(folder: Path) -> dict:
    return json.loads((folder / "model.json").read_text())["unified"]["decisions"]


# -- predict at one category's thresholds --------------------------------------------------------------------
def test_load_with_a_category_decides_with_that_categorys_thresholds(unified_dir) -> None:
    decisions = _decisions(unified_dir)
    union = load_model(unified_dir)
    assert float(union.post.threshold) == pytest.approx(union.meta["threshold"]["value"])
    for category in CATEGORIES:
        detector = load_model(unified_dir, category=category)
        assert float(detector.post.threshold) == pytest.approx(decisions[category]["threshold"]["value"])
        assert float(detector.post.pixel_threshold) == pytest.approx(decisions[category]["pixel_threshold"])
    assert decisions["weave"]["threshold"]["value"] != pytest.approx(decisions["disc"]["threshold"]["value"])


def test_cli_predict_with_a_category_labels_at_that_categorys_threshold(unified_dir, image_file) -> None:
    runner = CliRunner()
    rows = {}
    for option in ([], ["--category", "disc"], ["--category", "weave"]):
        result = runner.invoke(main, ["predict", str(unified_dir), str(image_file), "--json", *option])
        assert result.exit_code == 0, result.output
        rows[tuple(option)] = json.loads(result.output)[0]
    decisions = _decisions(unified_dir)
    for category in CATEGORIES:
        row = rows[("--category", category)]
        threshold = decisions[category]["threshold"]["value"]
        assert row["threshold"] == pytest.approx(threshold)
        assert row["label"] == int(row["score"] >= threshold)
    assert rows[()]["threshold"] == pytest.approx(load_model(unified_dir).meta["threshold"]["value"])


def test_an_unknown_category_is_a_clear_error_naming_the_runs_categories(unified_dir, bench, image_file) -> None:
    with pytest.raises(UnknownCategoryError, match="weave, disc"):
        load_model(unified_dir, category="wood")
    result = CliRunner().invoke(main, ["predict", str(unified_dir), str(image_file), "--category", "wood"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "'wood'" in result.output and "weave, disc" in result.output
    per_category = bench / "demo" / "weave" / "padim"
    assert float(load_model(per_category, category="weave").post.threshold) == \
        pytest.approx(float(load_model(per_category).post.threshold))
    with pytest.raises(UnknownCategoryError, match="'weave' only"):
        load_model(per_category, category="disc")


# -- a unified cell's example maps ---------------------------------------------------------------------------
def test_a_unified_cell_stores_example_maps_per_category_at_its_thresholds(unified_dir) -> None:
    for category in CATEGORIES:
        examples = read_examples(unified_dir / category / EXAMPLES_NAME)
        assert examples is not None and len(examples["paths"]) == 2
        assert all(path.startswith(f"demo://{category}/") for path in examples["paths"])
        detector = load_model(unified_dir, category=category)
        test_set = get_dataset("demo", category, "test", image_size=SIZE)
        index = {str(r.path): i for i, r in enumerate(test_set.records)}
        images = torch.stack([test_set[index[p]].image for p in examples["paths"]])
        expected = detector.detect(images).normalized_score
        assert torch.from_numpy(examples["scores"]) == pytest.approx(expected, abs=1e-5)
    assert not (unified_dir / EXAMPLES_NAME).exists()
    record = json.loads((unified_dir / "cell.json").read_text())
    assert record["examples"] == 2 * len(CATEGORIES)


def test_a_per_category_cell_still_stores_its_examples_in_its_own_folder(bench) -> None:
    folder = bench / "demo" / "weave" / "padim"
    examples = read_examples(folder / EXAMPLES_NAME)
    assert examples is not None and all(p.startswith("demo://weave/") for p in examples["paths"])
    assert json.loads((folder / "cell.json").read_text())["examples"] == 2


def test_the_report_shows_a_unified_models_examples_beside_the_per_category_ones(bench) -> None:
    rows = collect(bench)
    ranked = ["padim" + UNIFIED_SUFFIX, "padim"]
    folders = _example_folders([r for r in rows if r["dataset"] == "demo"], "weave", ranked)
    assert folders == {"padim" + UNIFIED_SUFFIX: "demo/unified-weave+disc/padim/weave", "padim": "demo/weave/padim"}
    assert example_maps(bench, "demo", "weave", folders) is not None
    only_unified = _example_folders(rows, "disc", ranked)
    assert list(only_unified) == ["padim" + UNIFIED_SUFFIX]
    assert example_maps(bench, "demo", "disc", only_unified) is not None
    page = write_report(bench)["html"].read_text()
    assert '<img alt="demo disc anomaly maps"' in page and '<img alt="demo weave anomaly maps"' in page


# -- ensembles over unified cells ----------------------------------------------------------------------------
def test_a_unified_cell_is_a_candidate_for_each_of_its_categories(bench, unified_dir) -> None:
    chosen = select_top(bench, top=2)
    assert set(chosen) == {("demo", "weave"), ("demo", "disc")}
    assert sorted(c.model for c in chosen[("demo", "weave")]) == ["padim", "padim" + UNIFIED_SUFFIX]
    (disc,) = chosen[("demo", "disc")]
    assert disc.path == unified_dir
    own = json.loads((unified_dir / "disc" / "results.json").read_text())
    assert disc.metric("image_auroc") == own["image"]["auroc"]
    assert set(select_top(bench, top=2, category="disc")) == {("demo", "disc")}


def test_ensembles_from_a_folder_with_unified_cells_fuse_per_category(bench, unified_dir, tmp_path) -> None:
    with pytest.warns(UserWarning, match="demo/disc: only 1 usable"):
        (result,) = build_ensembles(bench, top=2, output_dir=tmp_path, write_maps=False)
    assert (result.dataset, result.category) == ("demo", "weave")
    assert result.output_dir == tmp_path / "demo" / "weave" / "ensemble-top2"
    members = {m["name"]: m for m in result.members}
    assert set(members) == {"padim", "padim" + UNIFIED_SUFFIX}
    own = json.loads((unified_dir / "weave" / "results.json").read_text())
    assert members["padim" + UNIFIED_SUFFIX]["image_auroc"] == own["image"]["auroc"]
    # fusion and thresholds chosen on the weave images both members held out, tested on weave's test split
    assert result.results["validation"]["held_out"] == own["validation"]["held_out"]
    assert all(p.startswith("demo://weave/") for p in json.loads(
        (result.output_dir / f"fusion-{result.fusion}" / "scores.json").read_text())["paths"])


def test_an_ensemble_with_a_unified_member_needs_one_of_its_categories(bench, unified_dir, tmp_path) -> None:
    members = [unified_dir, bench / "demo" / "weave" / "padim"]
    with pytest.raises(ValueError, match="categories weave, disc: pass category="):
        build_ensemble(members, tmp_path / "a", write_maps=False)
    with pytest.raises(ValueError, match="'plate' is not one of them"):
        build_ensemble(members, tmp_path / "b", category="plate", write_maps=False)
