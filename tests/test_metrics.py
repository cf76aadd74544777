"""Metrics against hand-checked examples and exact, independent references."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage

from ad_core.metrics import (
    AupimoMetric,
    MapMetrics,
    THRESHOLD_METHODS,
    DefaultScorer,
    PixelMetrics,
    aupr,
    auroc,
    confusion,
    evaluate,
    f1_max,
    f1_threshold_percentile,
    f1_threshold_uniform,
    mean_ksigma_threshold,
    normal_fpr_threshold,
    percentile_threshold,
    pr_curve,
    roc_curve,
    youden_threshold,
)
from ad_core.types import Batch, Prediction

# A small ranking checked by hand: thresholds 0.9 .. 0.4 give F1 = 1/2, 2/5, 2/3, 6/7, 3/4, 2/3.
HAND_SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
HAND_LABELS = np.array([1, 0, 1, 1, 0, 0])


# ---------------------------------------------------------------- image curves


def test_auroc_perfect_inverted_and_random():
    labels = np.array([0] * 50 + [1] * 50)
    scores = np.arange(100, dtype=float)
    assert auroc(scores, labels) == 1.0
    assert auroc(-scores, labels) == 0.0
    rng = np.random.default_rng(0)
    assert auroc(rng.random(20000), rng.integers(0, 2, 20000)) == pytest.approx(0.5, abs=0.02)


def test_auroc_all_ties_is_one_half():
    assert auroc(np.full(10, 0.3), np.array([0, 1] * 5)) == 0.5


def test_auroc_equals_mann_whitney_count_with_ties():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.normal(size=300) + 0.7 * labels, 1)  # rounding makes many ties
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    expected = wins / (pos.size * neg.size)
    assert auroc(scores, labels) == pytest.approx(expected, abs=1e-12)
    fpr, tpr, _ = roc_curve(scores, labels)
    assert np.trapezoid(tpr, fpr) == pytest.approx(expected, abs=1e-12)


def test_roc_curve_runs_from_origin_to_one_with_descending_thresholds():
    fpr, tpr, thresholds = roc_curve(HAND_SCORES, HAND_LABELS)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.isinf(thresholds[0]) and np.all(np.diff(thresholds) < 0)
    np.testing.assert_allclose(tpr, [0, 1 / 3, 1 / 3, 2 / 3, 1, 1, 1])
    np.testing.assert_allclose(fpr, [0, 0, 1 / 3, 1 / 3, 1 / 3, 2 / 3, 1])


def test_aupr_perfect_ranking_and_hand_example():
    labels = np.array([0, 0, 0, 1, 1])
    assert aupr(np.array([0.1, 0.2, 0.3, 0.8, 0.9]), labels) == 1.0
    # recall steps of 1/3 at precisions 1, 2/3 and 3/4
    assert aupr(HAND_SCORES, HAND_LABELS) == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)


def test_pr_curve_ends_at_full_precision_zero_recall():
    precision, recall, thresholds = pr_curve(HAND_SCORES, HAND_LABELS)
    assert precision.shape == recall.shape == (thresholds.size + 1,)
    assert (precision[-1], recall[-1]) == (1.0, 0.0)
    assert np.all(np.diff(thresholds) > 0)
    assert (precision[0], recall[0]) == (0.5, 1.0)  # lowest threshold: everything flagged


def test_f1_max_hand_example_matches_confusion_at_its_threshold():
    best, threshold = f1_max(HAND_SCORES, HAND_LABELS)
    assert best == pytest.approx(6 / 7)
    assert threshold == 0.6
    assert confusion(HAND_SCORES, HAND_LABELS, threshold)["f1"] == pytest.approx(best)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_are_a_clear_error(bad):
    scores = np.array([0.1, bad, 0.3])
    for metric in (auroc, aupr, roc_curve, pr_curve, f1_max):
        with pytest.raises(ValueError, match="NaN/Inf: the model diverged"):
            metric(scores, np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="NaN/Inf"):
        evaluate(scores, np.array([0, 1, 1]))


def test_invalid_inputs_are_rejected():
    with pytest.raises(ValueError, match="only one class"):
        auroc(np.array([0.1, 0.2]), np.array([1, 1]))
    with pytest.raises(ValueError, match="differ in length"):
        auroc(np.array([0.1, 0.2, 0.3]), np.array([0, 1]))
    with pytest.raises(ValueError, match="0 \\(normal\\) or 1"):
        auroc(np.array([0.1, 0.2]), np.array([0, 2]))


def test_torch_tensors_are_accepted():
    assert auroc(torch.tensor([0.1, 0.9]), torch.tensor([0, 1])) == 1.0


# ---------------------------------------------------------------- thresholds


def test_f1_thresholds_separate_a_separable_set():
    scores = np.array([0.0, 1.0, 2.0, 3.0, 7.0, 8.0, 9.0, 10.0])
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    uniform = f1_threshold_uniform(scores, labels, n=11)  # grid 0, 1, ..., 10
    assert uniform == {"value": 4.0, "f1": 1.0}  # the lowest grid value above every normal score
    percentile = f1_threshold_percentile(scores, labels, n=101)
    assert percentile["f1"] == 1.0 and 3.0 < percentile["value"] <= 7.0


def test_f1_percentile_threshold_on_an_overlapping_set():
    result = f1_threshold_percentile(HAND_SCORES, HAND_LABELS)
    assert result["f1"] == pytest.approx(6 / 7)  # the fine grid finds the exact optimum
    assert 0.5 < result["value"] <= 0.6


def test_youden_threshold_hand_example():
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.5, 0.7, 0.8])
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    # at 0.4: TPR 1, FPR 1/4 (J 0.75); at 0.7: TPR 1/2, FPR 0 (J 0.5)
    assert youden_threshold(scores, labels) == {"value": 0.4, "sensitivity": 1.0, "specificity": 0.75}


def test_normal_only_thresholds():
    assert percentile_threshold(np.arange(101.0), q=95) == {"value": 95.0}
    assert mean_ksigma_threshold(np.array([1.0, 3.0]), k=3.0) == {
        "value": 5.0,
        "k": 3.0,
        "mean": 2.0,
        "std": 1.0,
    }
    with pytest.raises(ValueError, match="q must lie"):
        percentile_threshold(np.arange(5.0), q=120)


def test_confusion_counts_and_empty_denominators():
    scores = np.array([0.1, 0.4, 0.6, 0.9, 0.2, 0.8])
    labels = np.array([0, 0, 0, 1, 1, 1])
    c = confusion(scores, labels, 0.5)
    assert (c["tp"], c["fn"], c["tn"], c["fp"]) == (2, 1, 2, 1)
    assert c["accuracy"] == pytest.approx(4 / 6)
    assert c["precision"] == pytest.approx(2 / 3) and c["recall"] == pytest.approx(2 / 3)
    assert c["f1"] == pytest.approx(2 / 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        none_flagged = confusion(scores, labels, 2.0)
        no_anomalies = confusion(scores[:3], labels[:3], 2.0)
    assert none_flagged["precision"] == 0.0 and none_flagged["f1"] == 0.0 and none_flagged["fn"] == 3
    assert no_anomalies["recall"] == 0.0 and no_anomalies["accuracy"] == 1.0
    assert confusion(scores, labels, 0.8)["tp"] == 2  # score >= threshold counts as anomalous


# ---------------------------------------------------------------- pixel metrics


def _blob_masks(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Masks with 1-3 discs on two images out of three; the third stays all normal."""
    masks = np.zeros((n, size, size), dtype=np.float32)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        if i % 3 == 0:
            continue
        for _ in range(rng.integers(1, 4)):
            cy, cx, r = rng.integers(0, size), rng.integers(0, size), rng.integers(2, 9)
            masks[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
    return masks


def _random_maps(rng: np.random.Generator, masks: np.ndarray) -> np.ndarray:
    """Smooth noise, raised inside defects by a per-image amount, so the detector is good but imperfect."""
    strength = rng.uniform(0.0, 2.0, size=(masks.shape[0], 1, 1))
    maps = rng.normal(size=masks.shape) + 1.5 * strength * masks
    return ndimage.gaussian_filter(maps, (0, 2, 2)).astype(np.float32)


def _reference_aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float) -> float:
    """Brute force: FPR and mean region overlap at every distinct value, trapezoid up to the limit."""
    regions = []
    for image, mask in zip(maps, masks):
        labelled, count = ndimage.label(mask > 0.5, structure=np.ones((3, 3)))
        regions += [np.sort(image[labelled == r]) for r in range(1, count + 1)]
    normal = np.sort(maps[masks < 0.5])
    thresholds = np.unique(maps)[::-1]
    fpr = 1.0 - np.searchsorted(normal, thresholds, side="left") / normal.size
    pro = np.mean([1.0 - np.searchsorted(r, thresholds, side="left") / r.size for r in regions], axis=0)
    x, y = np.r_[0.0, fpr], np.r_[0.0, pro]
    inside = x <= fpr_limit
    x_cut = np.r_[x[inside], fpr_limit]
    y_cut = np.r_[y[inside], np.interp(fpr_limit, x, y)]
    return float(np.trapezoid(y_cut, x_cut) / fpr_limit)


def _streamed(maps: np.ndarray, masks: np.ndarray, batch: int = 8) -> PixelMetrics:
    metrics = PixelMetrics()
    for start in range(0, maps.shape[0], batch):
        metrics.update(
            torch.from_numpy(maps[start : start + batch]), torch.from_numpy(masks[start : start + batch])
        )
    return metrics


@pytest.mark.parametrize("transform", ["plain", "heavy_tailed", "offset", "normal_first", "quantised"])
def test_pixel_metrics_match_exact_references(transform):
    rng = np.random.default_rng(7)
    masks = _blob_masks(rng, 36, 64)
    maps = _random_maps(rng, masks)
    if transform == "heavy_tailed":  # a range many times wider than the bulk of the values
        maps = np.exp(2.5 * maps).astype(np.float32)
    elif transform == "offset":  # a large constant offset with a small spread
        maps = (1000.0 + 0.01 * maps).astype(np.float32)
    elif transform == "normal_first":  # first batch: only good images, so the anomalies come later and higher
        order = np.argsort(masks.reshape(len(masks), -1).max(1), kind="stable")
        maps, masks = maps[order] * (1 + 20 * (np.arange(36) >= 12))[:, None, None], masks[order]
        maps = maps.astype(np.float32)
    elif transform == "quantised":  # few distinct values: many ties between normal and anomalous pixels
        maps = np.round(maps * 3).astype(np.float32)
    result = _streamed(maps, masks).compute(fpr_limit=0.3)
    assert abs(result["pixel_auroc"] - auroc(maps.ravel(), masks.ravel())) < 1e-3
    assert abs(result["pixel_aupro"] - _reference_aupro(maps, masks, 0.3)) < 1e-2


def test_pixel_aupro_at_other_limits_matches_reference():
    rng = np.random.default_rng(3)
    masks = _blob_masks(rng, 24, 48)
    maps = _random_maps(rng, masks)
    metrics = _streamed(maps, masks)
    for limit in (0.05, 1.0):
        assert abs(metrics.compute(limit)["pixel_aupro"] - _reference_aupro(maps, masks, limit)) < 1e-2


def test_pixel_metrics_perfect_and_inverted_detector():
    masks = _blob_masks(np.random.default_rng(0), 9, 32)
    perfect = _streamed(masks.copy(), masks).compute()
    assert perfect == {"pixel_auroc": 1.0, "pixel_aupro": pytest.approx(1.0)}
    inverted = _streamed(-masks, masks).compute()
    assert inverted["pixel_auroc"] == 0.0 and inverted["pixel_aupro"] == 0.0


def test_pixel_metrics_tell_close_values_apart_and_keep_ties_tied():
    spread = np.linspace(0.0, 10.0, 256, dtype=np.float32).reshape(
        1, 16, 16
    )  # first batch sets the anchor at 5
    close = np.full((1, 16, 16), 9.0, dtype=np.float32)
    mask = np.zeros((1, 16, 16), dtype=np.float32)
    mask[0, :4, :4] = 1
    close[mask > 0] = 9.004  # 0.1 % above the normal pixels of that image, 4 away from the anchor
    maps, masks = np.concatenate([spread, close]), np.concatenate([np.zeros_like(mask), mask])
    metrics = PixelMetrics()
    metrics.update(maps[:1], masks[:1])
    metrics.update(maps[1:], masks[1:])
    assert metrics.compute()["pixel_auroc"] == pytest.approx(auroc(maps.ravel(), masks.ravel()), abs=1e-6)
    signed_zeros = np.zeros((1, 8, 8), dtype=np.float32)
    signed_zeros[mask[:, :8, :8] == 0] = -0.0  # equal values whatever their sign bit: a pure tie
    tied = PixelMetrics()
    tied.update(signed_zeros, mask[:, :8, :8])
    assert tied.compute()["pixel_auroc"] == 0.5


def test_pixel_regions_are_8_connected():
    mask = np.zeros((1, 6, 6), dtype=np.float32)
    mask[0, 1, 1] = mask[0, 2, 2] = 1  # touch only at a corner: one region
    mask[0, 4, 4] = mask[0, 4, 5] = 1  # a second region
    metrics = PixelMetrics()
    metrics.update(mask, mask)
    assert metrics.regions == 2


def test_pixel_metrics_without_masks_are_nan():
    metrics = PixelMetrics()
    maps = np.random.default_rng(0).random((4, 16, 16), dtype=np.float32)
    metrics.update(maps, np.zeros_like(maps))
    assert not metrics.has_masks
    assert metrics.normal_pixels == maps.size  # all-zero masks contribute only normal pixels
    result = metrics.compute()
    assert np.isnan(result["pixel_auroc"]) and np.isnan(result["pixel_aupro"])
    metrics.update(maps[:1], (maps[:1] > 0.9).astype(np.float32))
    assert metrics.has_masks


def test_pixel_metrics_reject_nan_maps_and_shape_mismatch():
    metrics = PixelMetrics()
    maps = np.zeros((2, 8, 8), dtype=np.float32)
    maps[1, 3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN/Inf"):
        metrics.update(maps, np.zeros_like(maps))
    with pytest.raises(ValueError, match="same shape"):
        metrics.update(np.zeros((2, 8, 8)), np.zeros((2, 4, 4)))


def test_pixel_state_does_not_grow_with_images():
    def state_bytes(m: PixelMetrics) -> int:
        return sum(v.nbytes for v in vars(m).values() if isinstance(v, np.ndarray))

    rng = np.random.default_rng(0)
    metrics = PixelMetrics()
    masks = _blob_masks(rng, 16, 128)
    metrics.update(_random_maps(rng, masks), masks)
    before = state_bytes(metrics)
    for _ in range(10):
        metrics.update(_random_maps(rng, masks), masks)
    assert metrics.images == 176
    assert state_bytes(metrics) == before == metrics.nbytes
    assert metrics.nbytes <= 32 * 2**20


# ---------------------------------------------------------------- evaluate and the scorer

TOP_KEYS = {"image", "pixel", "thresholds", "oracle_thresholds", "threshold", "confusion", "score_range", "counts"}
ORACLE_NAMES = ["f1_percentile", "f1_uniform", "roc_youden", "percentile_95"]


def _scores_labels(seed: int = 0, n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.array([0] * (n // 2) + [1] * (n - n // 2))
    return rng.normal(size=n) + 1.5 * labels, labels


def test_evaluate_structure_is_exact_and_json_ready():
    scores, labels = _scores_labels()
    held_out = np.random.default_rng(1).normal(size=40)
    result = evaluate(scores, labels, {"pixel_auroc": 0.9, "pixel_aupro": 0.8}, train_scores=held_out,
                      normal_scores=held_out)
    assert set(result) == TOP_KEYS
    assert set(result["image"]) == {"auroc", "aupr", "f1_max"}
    assert result["pixel"] == {"auroc": 0.9, "aupro": 0.8}
    assert list(result["thresholds"]) == ["normal_fpr", "mean_ksigma"]
    assert list(result["oracle_thresholds"]) == ORACLE_NAMES
    assert set(result["oracle_thresholds"]["roc_youden"]) == {"value", "sensitivity", "specificity", "selected_on",
                                                              "confusion"}
    assert set(result["thresholds"]["mean_ksigma"]) == {"value", "k", "mean", "std", "selected_on"}
    assert result["threshold"] == {  # the default: no test label involved
        "method": "normal_fpr",
        "value": result["thresholds"]["normal_fpr"]["value"],
        "selected_on": "held-out normal images",
    }
    assert set(result["confusion"]) == {"tp", "fn", "tn", "fp", "accuracy", "precision", "recall", "f1"}
    assert result["counts"] == {"normal": 30, "anomalous": 30}
    assert result["score_range"] == {"min": scores.min(), "max": scores.max()}
    assert result["image"]["auroc"] == auroc(scores, labels)
    oracle = result["oracle_thresholds"]
    assert oracle["percentile_95"]["value"] == pytest.approx(np.percentile(scores[:30], 95))
    assert all("oracle" in t["selected_on"] for t in oracle.values())
    for t in oracle.values():
        assert t["confusion"] == confusion(scores, labels, t["value"])
    assert json.loads(json.dumps(result, allow_nan=False)) == result  # plain floats and ints only
    assert all(type(v) is int for k, v in result["confusion"].items() if k in ("tp", "fn", "tn", "fp"))


@pytest.mark.parametrize("method", THRESHOLD_METHODS)
def test_evaluate_uses_the_chosen_threshold_for_the_confusion_matrix(method):
    scores, labels = _scores_labels(2)
    held_out = np.linspace(-1.0, 1.0, 50)
    result = evaluate(scores, labels, train_scores=held_out, normal_scores=held_out, threshold_method=method)
    pool = result["oracle_thresholds"] if method in ORACLE_NAMES else result["thresholds"]
    value = pool[method]["value"]
    assert result["threshold"] == {"method": method, "value": value, "selected_on": pool[method]["selected_on"]}
    assert result["confusion"] == confusion(scores, labels, value)
    assert result["pixel"] is None
    assert {"normal_fpr", "mean_ksigma"} == set(result["thresholds"])


def test_normal_fpr_threshold_flags_at_most_the_target_share():
    values = np.arange(200, dtype=np.float32)
    t = normal_fpr_threshold(values, 0.01)  # 2 of 200 may be flagged: 198 and 199
    assert np.sum(values >= t["value"]) == 2 and t["fpr"] == 0.01 and 197 < t["value"] <= 198
    strict = normal_fpr_threshold(values[:50], 0.01)  # fewer than 100 values: none may be flagged
    assert np.sum(values[:50] >= strict["value"]) == 0 and strict["value"] > 49
    assert np.float32(strict["value"]) == strict["value"]  # exact once stored as a float32 buffer
    ties = normal_fpr_threshold(np.array([1.0, 1.0, 1.0, 1.0], dtype=np.float32), 0.5)
    assert ties["fpr"] == 0.0  # ties are never split: fewer false positives rather than more
    with pytest.raises(ValueError, match="needs normal images"):
        normal_fpr_threshold(np.array([]), 0.01)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        normal_fpr_threshold(values, 1.0)


def test_evaluate_rejects_unknown_method_and_missing_train_scores():
    scores, labels = _scores_labels()
    with pytest.raises(ValueError, match="normal_fpr, mean_ksigma, f1_percentile, f1_uniform, roc_youden, percentile_95"):
        evaluate(scores, labels, threshold_method="otsu")
    with pytest.raises(ValueError, match="needs train_scores"):
        evaluate(scores, labels, threshold_method="mean_ksigma")
    assert "mean_ksigma" not in evaluate(scores, labels)["thresholds"]


def test_evaluate_falls_back_and_says_so():
    scores = np.arange(21.0)
    labels = np.zeros(21, dtype=int)
    result = evaluate(scores, labels)  # no held-out normals and a one-class test set: the last resort
    assert all(np.isnan(v) for v in result["image"].values())
    assert set(result["oracle_thresholds"]) == {"percentile_95"} and not result["thresholds"]
    assert result["threshold"]["method"] == "percentile_95" and result["threshold"]["value"] == 19.0
    assert result["threshold"]["fallback_from"] == "normal_fpr" and "oracle" in result["threshold"]["selected_on"]
    assert result["counts"] == {"normal": 21, "anomalous": 0}
    assert result["confusion"]["fp"] == 2  # 19 and 20
    train = np.array([4.0, 8.0])  # mean 6, std 2
    with_train = evaluate(scores, labels, train_scores=train, threshold_method="roc_youden")
    assert with_train["threshold"]["method"] == "mean_ksigma" and with_train["threshold"]["value"] == 12.0
    assert with_train["threshold"]["fallback_from"] == "roc_youden"
    with_normals = evaluate(scores, labels, normal_scores=np.arange(100.0), threshold_method="f1_uniform")
    assert with_normals["threshold"]["method"] == "normal_fpr"  # the deployable rule comes first
    json.dumps(result)


def test_per_defect_recall_at_the_chosen_threshold():
    scores = np.array([0.1, 0.2, 0.9, 0.3, 0.8, 0.7])
    labels = np.array([0, 0, 1, 1, 1, 1])
    types = ["good", "good", "scratch", "scratch", "hole", "hole"]
    result = evaluate(scores, labels, normal_scores=np.array([0.1, 0.2, 0.25]), target_fpr=0.0, defect_types=types)
    assert 0.25 < result["threshold"]["value"] < 0.3
    assert result["per_defect"] == {"hole": {"images": 2, "recall": 1.0}, "scratch": {"images": 2, "recall": 1.0}}
    result = evaluate(scores, labels, fixed_thresholds={"own": 0.5}, threshold_method="own", defect_types=types)
    assert result["per_defect"]["scratch"]["recall"] == 0.5 and result["per_defect"]["hole"]["recall"] == 1.0


def test_default_scorer_streams_batches_into_evaluate():
    rng = np.random.default_rng(5)
    masks = _blob_masks(rng, 12, 32)
    maps = _random_maps(rng, masks)
    labels = (masks.reshape(12, -1).max(1) > 0).astype(np.int64)
    scores = maps.reshape(12, -1).max(1)
    predictions, targets = [], []
    for s in range(0, 12, 4):
        predictions.append(
            Prediction(
                score=torch.from_numpy(scores[s : s + 4]), anomaly_map=torch.from_numpy(maps[s : s + 4])
            )
        )
        targets.append(
            Batch(
                image=torch.zeros(4, 3, 32, 32),
                label=torch.from_numpy(labels[s : s + 4]),
                mask=torch.from_numpy(masks[s : s + 4]),
                path=[""] * 4,
                category=["c"] * 4,
            )
        )
    result = DefaultScorer(threshold_method="roc_youden")(predictions, targets)
    expected = evaluate(scores, labels, {**_streamed(maps, masks, batch=4).compute(), "anomalous_without_mask": 0},
                        threshold_method="roc_youden", defect_types=["unknown"] * 12)
    assert {k: v for k, v in result.items() if k != "pixel"} == {k: v for k, v in expected.items() if k != "pixel"}
    assert result["pixel"]["auroc"] == expected["pixel"]["auroc"] and result["pixel"]["aupro"] == expected["pixel"]["aupro"]
    assert result["pixel"]["auroc"] == pytest.approx(auroc(maps.ravel(), masks.ravel()), abs=1e-3)
    for t in targets:
        t.mask = None
    assert DefaultScorer(normal_scores=scores[labels == 0])(predictions, targets)["pixel"] is None
    with pytest.raises(ValueError, match="valid ones"):
        DefaultScorer(threshold_method="best")


# ---------------------------------------------------------------- AUPIMO, unknown masks, per-defect pixels

def _direct_aupimo(maps: np.ndarray, masks: np.ndarray, labels: np.ndarray, bounds: tuple[float, float]) -> list:
    """AUPIMO by brute force: every distinct value as a threshold, the polyline over log10(FPR) integrated
    segment by segment between the bounds (FPR: mean of the normal images' own FPRs)."""
    thresholds = np.unique(maps)[::-1]
    normal = maps[labels == 0]
    fpr = np.array([np.mean([(m >= t).mean() for m in normal]) for t in thresholds])
    low, high = np.log10(bounds)
    areas = []
    for amap, mask in zip(maps[labels == 1], masks[labels == 1]):
        tpr = np.array([(amap[mask] >= t).mean() for t in thresholds])
        x, y = np.log10(fpr[fpr > 0]), tpr[fpr > 0]
        area = 0.0
        for i in range(len(x) - 1):
            a, b = max(x[i], low), min(x[i + 1], high)
            if x[i + 1] > x[i] and b > a:
                slope = (y[i + 1] - y[i]) / (x[i + 1] - x[i])
                area += (b - a) * (y[i] + slope * (a - x[i]) + y[i] + slope * (b - x[i])) / 2
        areas.append(area / (high - low))
    return areas


def _aupimo_case(seed: int, quantised: bool):
    rng = np.random.default_rng(seed)
    maps = rng.random((7, 20, 20)).astype(np.float32)
    masks = np.zeros_like(maps, dtype=bool)
    labels = np.array([0, 0, 0, 0, 1, 1, 1])
    for i in range(4, 7):
        y, x = rng.integers(0, 12, 2)
        masks[i, y : y + 8, x : x + 6] = True
        maps[i][masks[i]] += rng.uniform(0.0, 0.4)
    if quantised:  # values on a coarse grid fall in distinct bins: the streamed result is then exact
        maps = (np.round(maps * 256) / 256).astype(np.float32)
    return maps, masks, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_aupimo_matches_a_direct_computation(seed):
    bounds = (1e-2, 2e-1)  # 1600 normal pixels resolve these; the default 1e-5 needs 100k
    for quantised, tolerance in ((True, 1e-12), (False, 1e-3)):
        maps, masks, labels = _aupimo_case(seed, quantised)
        metric = AupimoMetric(fpr_bounds=bounds)
        metric.update(maps[:3], masks[:3], labels[:3])
        metric.update(maps[3:], masks[3:], labels[3:])
        result = metric.compute()
        expected = _direct_aupimo(maps, masks, labels, bounds)
        np.testing.assert_allclose(result["per_image"], expected, atol=tolerance)
        assert result["aupimo"] == pytest.approx(np.mean(expected), abs=tolerance) and result["images"] == 3


def test_aupimo_extremes_and_undefined_cases():
    maps, masks, labels = _aupimo_case(0, True)
    perfect = maps.copy()
    perfect[masks] = 5.0  # every defect pixel above every normal pixel: overlap 1 at every FPR
    metric = AupimoMetric(fpr_bounds=(1e-2, 2e-1))
    metric.update(perfect, masks, labels)
    assert metric.compute()["aupimo"] == pytest.approx(1.0)
    hidden = maps.copy()
    hidden[masks] = -1.0  # below every normal pixel: no overlap within the FPR range
    metric = AupimoMetric(fpr_bounds=(1e-2, 2e-1))
    metric.update(hidden, masks, labels)
    assert metric.compute()["aupimo"] == 0.0
    small = AupimoMetric()  # 1600 normal pixels cannot resolve an FPR of 1e-5
    small.update(maps, masks, labels)
    result = small.compute()
    assert np.isnan(result["aupimo"]) and "cannot resolve FPR 1e-05" in result["reason"]
    with pytest.raises(ValueError, match="fpr_bounds"):
        AupimoMetric(fpr_bounds=(1e-4, 1e-5))


def test_unknown_masks_are_left_out_of_pixel_metrics_and_counted():
    rng = np.random.default_rng(3)
    masks = _blob_masks(rng, 6, 32)
    maps = _random_maps(rng, masks)
    labels = np.array([0, 0, 1, 1, 1, 1])
    masks[:2] = 0
    known = np.array([True, True, True, True, False, True])
    unknown_mask = np.zeros_like(masks[4])  # what collate puts in place of a missing mask
    with_placeholder = masks.copy()
    with_placeholder[4] = unknown_mask
    streamed = MapMetrics(aupimo_bounds=(1e-2, 1e-1))
    streamed.update(maps, with_placeholder, labels, known, ["good", "good", "a", "b", "a", "b"])
    result = streamed.compute()
    keep = known
    reference = PixelMetrics()
    reference.update(maps[keep], masks[keep])
    assert result["pixel_auroc"] == reference.compute()["pixel_auroc"]
    assert result["anomalous_without_mask"] == 1
    as_normal = PixelMetrics()  # the old behaviour: the defect pixels counted as normal ones
    as_normal.update(maps, with_placeholder)
    assert as_normal.compute()["pixel_auroc"] != result["pixel_auroc"]


def test_per_defect_pixel_auroc_pits_each_type_against_every_normal_pixel():
    rng = np.random.default_rng(4)
    masks = _blob_masks(rng, 4, 32)
    maps = _random_maps(rng, masks)
    metrics = PixelMetrics()
    metrics.update(maps, masks, ["a", "b", "a", "b"])
    per_type = metrics.compute()["per_defect_pixel_auroc"]
    normal = maps[masks < 0.5]
    for kind, rows in (("a", [0, 2]), ("b", [1, 3])):
        anomalous = maps[rows][masks[rows] > 0.5]
        values = np.concatenate([normal, anomalous])
        truth = np.concatenate([np.zeros(normal.size), np.ones(anomalous.size)])
        assert per_type[kind] == pytest.approx(auroc(values, truth), abs=1e-4)
