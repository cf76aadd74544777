"""Ensembles: top-k selection, per-member normalisation, fusion rules, save/load with hash checks, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import ad_core
from ad_core.cli import main
from ad_core.data import DemoDataset, write_demo_dataset
from ad_core.ensemble import (
    FUSION_RULES,
    EnsembleError,
    NormalStats,
    build_ensemble,
    build_ensembles,
    combine,
    fuse,
    load_ensemble,
    select_top,
)
from ad_core.types import collate

CATEGORY = "plate"  # holes and missing pieces: every memory model ranks them with random weights
MEMBERS = ("padim", "patchcore-r18", "dfkde")


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    """A benchmark-like directory of three tiny trained members; dfkde at another image size."""
    root = tmp_path_factory.mktemp("bench")
    common = {"output_dir": root, "pretrained": False, "verbose": False, "write_maps": False, "batch_size": 8}
    ad_core.train("demo", CATEGORY, ["padim", "patchcore-r18"], image_size=64, **common)
    ad_core.train("demo", CATEGORY, "dfkde", image_size=80, **common)
    (root / "demo" / CATEGORY / "padim" / "cell.json").write_text(json.dumps({"status": "ok"}))
    return root


@pytest.fixture(scope="module")
def built(bench, tmp_path_factory):
    members = [bench / "demo" / CATEGORY / m for m in MEMBERS]
    return build_ensemble(members, bench / "demo" / CATEGORY / "ensemble", write_maps=False)


@pytest.fixture(scope="module")
def test_images() -> tuple[torch.Tensor, np.ndarray]:
    data = DemoDataset(category=CATEGORY, split="test", image_size=80, n_test_normal=4, n_test_anomalous=4)
    batch = collate([data[i] for i in range(len(data))])
    return batch.image, batch.label.numpy()


# -- choosing members ---------------------------------------------------------------------------------------
def _cell(root: Path, category: str, model: str, val: float | None, pixel: float = 0.5,
          status: str | None = None, weights: bool = True, test: float = 0.5) -> None:
    """A cell whose validation source gave image AUROC `val` and pixel AUROC `pixel`; its test image AUROC is
    `test` (the test pixel AUROC is the reverse of `pixel`, so a ranking that reads the test split shows)."""
    path = root / "demo" / category / model
    path.mkdir(parents=True)
    if weights:
        (path / "model.safetensors").write_bytes(b"x")
        (path / "model.json").write_text("{}")
    (path / "results.json").write_text(json.dumps({"validation": {"image_auroc": val, "pixel_auroc": pixel},
                                                   "image": {"auroc": test}, "pixel": {"auroc": 1 - pixel}}))
    if status is not None:
        (path / "cell.json").write_text(json.dumps({"status": status}))


def test_select_top_ranks_usable_cells_and_skips_the_rest(tmp_path) -> None:
    _cell(tmp_path, "plate", "a", 0.90, status="ok")
    _cell(tmp_path, "plate", "b", 0.95)  # no cell.json: usable
    _cell(tmp_path, "plate", "c", 0.99, status="failed")  # best figure, but the run failed
    _cell(tmp_path, "plate", "d", 0.98, weights=False)  # no checkpoint
    _cell(tmp_path, "plate", "e", 0.70, pixel=0.9)
    _cell(tmp_path, "plate", "f", 0.70, pixel=0.8)
    _cell(tmp_path, "plate", "g", None, pixel=0.99)  # no validation AUROC (an older run): last
    _cell(tmp_path, "plate", "ensemble-top3", 1.0)
    (tmp_path / "demo" / "plate" / "ensemble-top3" / "ensemble.json").write_text("{}")
    _cell(tmp_path, "disc", "x", 0.6)
    _cell(tmp_path, "disc", "y", 0.8)

    chosen = select_top(tmp_path, top=4)
    assert list(chosen) == [("demo", "disc"), ("demo", "plate")]
    assert [c.model for c in chosen[("demo", "plate")]] == ["b", "a", "e", "f"]
    assert [c.model for c in chosen[("demo", "disc")]] == ["y", "x"]
    assert [c.model for c in select_top(tmp_path, top=7)[("demo", "plate")]] == ["b", "a", "e", "f", "g"]
    assert [c.model for c in select_top(tmp_path, 2, by="validation_pixel_auroc", category="plate")[
        ("demo", "plate")]] == ["g", "e"]
    assert list(select_top(tmp_path, 3, category="disc")) == [("demo", "disc")]
    with pytest.raises(ValueError, match="unknown metric"):
        select_top(tmp_path, by="speed")
    with pytest.raises(ValueError, match="at least 2"):
        select_top(tmp_path, top=1)
    with pytest.raises(FileNotFoundError, match="no usable trained models"):
        select_top(tmp_path, category="weave")


def test_the_test_split_chooses_members_only_when_named(tmp_path) -> None:
    _cell(tmp_path, "plate", "steady", 0.9, test=0.6)  # best on the validation source
    _cell(tmp_path, "plate", "lucky", 0.7, test=0.99)  # best on the test split
    _cell(tmp_path, "plate", "third", 0.8, pixel=0.9, test=0.7)
    assert [c.model for c in select_top(tmp_path, 2)[("demo", "plate")]] == ["steady", "third"]
    by_test = select_top(tmp_path, 2, by="image_auroc")[("demo", "plate")]
    assert [c.model for c in by_test] == ["lucky", "third"]
    # ties on a test metric break on the test pixel AUROC, on a validation metric on the validation one
    _cell(tmp_path, "disc", "p", 0.8, pixel=0.9, test=0.5)
    _cell(tmp_path, "disc", "q", 0.8, pixel=0.6, test=0.5)
    assert [c.model for c in select_top(tmp_path, 2, category="disc")[("demo", "disc")]] == ["p", "q"]
    assert [c.model for c in select_top(tmp_path, 2, by="image_auroc", category="disc")[("demo", "disc")]] == \
        ["q", "p"]


# -- normalisation and fusion math ---------------------------------------------------------------------------
def test_normal_stats_zscore_and_ecdf() -> None:
    values = torch.arange(10, dtype=torch.float32)
    stats = NormalStats.fit(values)
    assert float(stats.mean) == pytest.approx(4.5)
    assert float(stats.std) == pytest.approx(float(values.std()))
    torch.testing.assert_close(stats.rank(values), (torch.arange(10) + 0.5) / 10)  # the ECDF at the knots
    assert float(stats.rank(torch.tensor(2.5))) == pytest.approx(0.3)  # linear between knots
    far = stats.rank(torch.tensor([-1e4, -10.0, -1.0, 10.0, 100.0, 1e4]))
    assert (far > 0).all() and (far < 1).all() and (far.diff() > 0).all()  # tails stay ordered, never tie
    torch.testing.assert_close(stats.zscore(torch.tensor([4.5])), torch.tensor([0.0]))

    many = torch.linspace(0, 1, 100_001) ** 2
    big = NormalStats.fit(many, max_knots=64)
    assert big.knots.numel() == 64
    ranks = big.rank(many)
    assert float(ranks.mean()) == pytest.approx(0.5, abs=0.01)
    assert float((ranks < 0.25).float().mean()) == pytest.approx(0.25, abs=0.01)
    with pytest.raises(ValueError, match="at least 2"):
        NormalStats.fit(torch.tensor([1.0]))
    with pytest.raises(ValueError, match="all equal"):
        NormalStats.fit(torch.ones(5))
    tied = NormalStats.fit(torch.tensor([0.0, 1.0, 1.0, 1.0, 2.0]))  # mid-ranks: the tie sits at its mean position
    torch.testing.assert_close(tied.rank(torch.tensor([0.0, 1.0, 2.0])), torch.tensor([0.1, 0.5, 0.9]))


def test_fusion_rules_on_hand_made_inputs() -> None:
    a = NormalStats(torch.tensor(10.0), torch.tensor(2.0), torch.tensor([8.0, 12.0]), torch.tensor([0.25, 0.75]))
    b = NormalStats(torch.tensor(0.0), torch.tensor(0.5), torch.tensor([-1.0, 1.0]), torch.tensor([0.25, 0.75]))
    raw_a, raw_b = torch.tensor([14.0, 10.0]), torch.tensor([0.0, 1.0])  # z-scores: a [2, 0], b [0, 2]
    torch.testing.assert_close(fuse([raw_a, raw_b], [a, b], "mean"), torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(fuse([raw_a, raw_b], [a, b], "max"), torch.tensor([2.0, 2.0]))
    # ranks: a(14) is one std past its last knot: 1 - 0.25 / 2 = 0.875; a(10) = 0.5; b(0) = 0.5; b(1) = 0.75
    torch.testing.assert_close(fuse([raw_a, raw_b], [a, b], "rank_mean"), torch.tensor([0.6875, 0.625]))
    stack = torch.tensor([[1.0, -3.0], [2.0, 5.0], [0.0, 1.0]])
    torch.testing.assert_close(combine(stack, "max"), torch.tensor([2.0, 5.0]))
    torch.testing.assert_close(combine(stack, "mean"), torch.tensor([1.0, 1.0]))
    with pytest.raises(ValueError, match="unknown fusion rule"):
        combine(stack, "median")


# -- a built ensemble ----------------------------------------------------------------------------------------
def test_normalisation_makes_members_comparable(built) -> None:
    model = built.detector.model
    train = DemoDataset(category=CATEGORY, split="train", image_size=80)
    held_out = set(built.detector.meta["validation"]["held_out"])  # the members' validation share, not trained on
    images = collate([train[i] for i in range(len(train)) if i not in held_out]).image
    with torch.inference_mode():
        raw = model.member_outputs(images)
    stds = [float(p.score.std()) for p in raw]
    assert max(stds) / min(stds) > 3  # raw scores of the members live on different scales ...
    for pred, stats in zip(raw, model.score_stats):
        z, ranks = stats.zscore(pred.score), stats.rank(pred.score)
        assert float(z.mean()) == pytest.approx(0.0, abs=1e-3) and float(z.std()) == pytest.approx(1.0, abs=1e-3)
        assert float(ranks.mean()) == pytest.approx(0.5, abs=0.01)  # ECDF of the normal scores: mean 1/2
        assert float(ranks.min()) < 0.1 and float(ranks.max()) > 0.9
    for i, stats in model.map_stats.items():
        z = stats.zscore(raw[int(i)].anomaly_map)
        assert float(z.mean()) == pytest.approx(0.0, abs=1e-3) and float(z.std()) == pytest.approx(1.0, abs=1e-3)
    assert sorted(model.map_stats) == ["0", "1"]  # dfkde has no map: it takes part in the score only


def test_every_rule_is_evaluated_and_the_best_saved(built) -> None:
    assert set(built.rules) == set(FUSION_RULES)
    validation = {r: built.rules[r]["validation"] for r in FUSION_RULES}  # chosen there, never on the test split
    best = max(FUSION_RULES, key=lambda r: validation[r]["image_auroc"])
    assert built.best_fusion == built.fusion == built.detector.model.fusion
    assert validation[built.best_fusion]["image_auroc"] == validation[best]["image_auroc"]
    assert built.rules[built.fusion]["threshold"]["method"] == "normal_fpr"
    for rule in FUSION_RULES:
        assert (built.output_dir / f"fusion-{rule}" / "results.json").is_file()
        assert (built.output_dir / f"fusion-{rule}" / "roc.png").is_file()
    top = json.loads((built.output_dir / "results.json").read_text())
    assert top["run"]["fusion"] == built.fusion and top["image"] == built.results["image"]
    assert f"best fusion rule: {built.best_fusion}" in (built.output_dir / "ensemble.txt").read_text()
    text = (built.output_dir / "results.txt").read_text()
    assert "=== Fusion rules and members ===" in text and f"best fusion rule: {built.best_fusion}" in text
    assert not any("{" in line for line in text.splitlines()), "results.txt holds raw JSON"
    spec = json.loads((built.output_dir / "ensemble.json").read_text())
    assert [m["path"] for m in spec["members"]] == [f"../{m}" for m in MEMBERS]  # relative to the ensemble
    assert spec["image_size"] == 80 and spec["threshold"] == built.results["threshold"]


def test_one_image_does_not_depend_on_the_batch(built, test_images) -> None:
    images, _ = test_images
    model = built.detector.model
    for rule in FUSION_RULES:
        batch = model.fuse_outputs(model.member_outputs(images[:4]), rule)
        single = [model.fuse_outputs(model.member_outputs(images[i : i + 1]), rule) for i in range(4)]
        torch.testing.assert_close(batch.score, torch.cat([p.score for p in single]), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(batch.anomaly_map, torch.cat([p.anomaly_map for p in single]),
                                   rtol=1e-4, atol=1e-5)


def test_reused_member_outputs_equal_fresh_ones(built, test_images) -> None:
    images, _ = test_images
    model = built.detector.model
    fresh = model.member_outputs(images[:3])
    with model.reusing_member_outputs():
        first = model.member_outputs(images[:3])
        assert model.member_outputs(images[:3].clone()) is first  # same pixels: the members do not run again
        assert model.member_outputs(images[1:4]) is not first
    assert model.member_outputs(images[:3]) is not first  # nothing is kept after the block
    for a, b in zip(fresh, first):
        assert torch.equal(a.score, b.score)


def test_save_load_gives_identical_predictions(built, test_images) -> None:
    images, labels = test_images
    loaded = ad_core.load_model(built.output_dir)
    before, after = built.detector.detect(images), loaded.detect(images)
    assert torch.equal(before.score, after.score) and torch.equal(before.anomaly_map, after.anomaly_map)
    assert torch.equal(before.label, after.label)
    assert after.anomaly_map.shape == (len(images), 80, 80)
    assert ((after.normalized_score >= 0) & (after.normalized_score <= 1)).all()
    assert loaded.meta["fusion"] == built.fusion


def test_changed_or_missing_member_is_refused(bench, built, tmp_path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(bench, copy)  # relative member paths: the moved tree still loads
    ensemble = copy / built.output_dir.relative_to(bench)
    load_ensemble(ensemble)
    weights = copy / "demo" / CATEGORY / "padim" / "model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original + b"\0")
    with pytest.raises(EnsembleError, match=r"member 0 \(padim\) changed since the ensemble was built"):
        ad_core.load_model(ensemble)
    weights.write_bytes(original)
    shutil.rmtree(copy / "demo" / CATEGORY / "dfkde")
    with pytest.raises(EnsembleError, match=r"member 2 \(dfkde\) is missing"):
        ad_core.load_model(ensemble)


def test_held_out_normal_images_give_unbiased_statistics(bench, built, tmp_path) -> None:
    """DFKDE's density at its own training images is dominated by their own kernels: its training scores barely
    spread. On normal images it never saw (another seed of the demo generator) the spread is real."""
    held_out = write_demo_dataset(tmp_path / "held_out", CATEGORY, image_size=80, n_train=12, n_test_normal=1,
                                  n_test_anomalous=1, seed=7) / CATEGORY / "train"
    members = [bench / "demo" / CATEGORY / m for m in ("padim", "dfkde")]
    result = build_ensemble(members, tmp_path / "out", normal_dir=held_out, write_maps=False)
    spec = json.loads((tmp_path / "out" / "ensemble.json").read_text())
    assert spec["normal_images"] == {"source": str(held_out.resolve()), "count": 12}
    on_training, held = built.detector.model.score_stats[2], result.detector.model.score_stats[1]
    assert float(held.std) > 5 * float(on_training.std)

    two = tmp_path / "two"  # the members under two categories: one folder of normal images cannot serve both
    for category in (CATEGORY, "disc"):
        for model in ("padim", "dfkde"):
            shutil.copytree(bench / "demo" / CATEGORY / model, two / "demo" / category / model)
    with pytest.raises(ValueError, match="name the dataset and category"):
        build_ensembles(two, normal_dir=held_out)


def test_members_of_different_categories_are_refused(bench, tmp_path) -> None:
    other = tmp_path / "padim-disc"
    shutil.copytree(bench / "demo" / CATEGORY / "padim", other)
    meta = json.loads((other / "model.json").read_text())
    meta["trained_on"]["category"] = "disc"
    del meta["run_id"]  # a checkpoint saved outside a run folder: an edited run folder would be refused as altered
    (other / "model.json").write_text(json.dumps(meta))
    (other / "manifest.json").unlink()
    with pytest.raises(ValueError, match="different or unrecorded categories"):
        build_ensemble([bench / "demo" / CATEGORY / "dfkde", other], tmp_path / "out")
    with pytest.raises(ValueError, match="at least 2 members"):
        build_ensemble([other], tmp_path / "out")


# -- the command line ----------------------------------------------------------------------------------------
def test_cli_ensemble_from_benchmark_then_predict_and_test(bench, tmp_path) -> None:
    runner = CliRunner()
    out = tmp_path / "ensembles"
    result = runner.invoke(main, ["ensemble", "--from", str(bench), "--top", "2", "--dataset", "demo",
                                  "--category", CATEGORY, "--fusion", "max", "--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    assert "saved: max" in result.output
    ensemble = out / "demo" / CATEGORY / "ensemble-top2"
    spec = json.loads((ensemble / "ensemble.json").read_text())
    assert spec["fusion"] == "max" and len(spec["members"]) == 2
    assert spec["members_selected_on"] == "top 2 by validation_image_auroc (validation source; the test split played no part)"
    validation = {m: json.loads((bench / "demo" / CATEGORY / m / "results.json").read_text())["validation"]["image_auroc"]
                  for m in MEMBERS}
    best_two = sorted(validation, key=lambda m: -validation[m])[:2]
    assert sorted(Path(m["path"]).name for m in spec["members"]) == sorted(best_two)
    assert any((ensemble / "fusion-max" / "maps").iterdir())

    images = write_demo_dataset(tmp_path / "images", CATEGORY, image_size=96, n_train=1, n_test_normal=2,
                                n_test_anomalous=2)
    result = runner.invoke(main, ["predict", str(ensemble), str(images / CATEGORY / "test"), "--json",
                                  "--output", str(tmp_path / "maps")])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert len(rows) == 4 and all(0 <= r["normalized_score"] <= 1 and r["label"] in (0, 1) for r in rows)
    assert all(Path(r["map"]).is_file() for r in rows)
    assert rows[0]["threshold"] == pytest.approx(spec["threshold"]["value"])

    result = runner.invoke(main, ["test", str(ensemble), "--dataset", "demo", "--category", CATEGORY,
                                  "--output-dir", str(tmp_path / "test")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "test" / "results.json").read_text())["image"]["auroc"] == \
        pytest.approx(spec["fusion_results"]["max"]["image_auroc"])


def test_cli_ensemble_needs_members_or_a_benchmark(bench) -> None:
    result = CliRunner().invoke(main, ["ensemble"])
    assert result.exit_code == 2 and "--from" in result.output
    result = CliRunner().invoke(main, ["ensemble", "--members", str(bench / "demo" / CATEGORY / "padim")])
    assert result.exit_code == 1 and "at least 2 members" in result.output
